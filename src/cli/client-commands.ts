// The client commands of `eggsfs` (ls, stat, lookup, cat, mkdir, echo_into, copy_into, copy_out,
// mv, rm, rmdir, transient_files and the original's rm_file/rm_dir), with the original's argument
// order. The cluster is found through shuckle: --shuckle URL, else $EGGSFS_SHUCKLE, else
// http://localhost:5000. Errors are one line naming the path and the cause; exit code 1.
import { createWriteStream } from 'node:fs';
import { open as fsOpen, stat as fsStat, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { Transform, type Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { EggsError, describeError, errorName } from '../proto/errors.js';
import { INODE_TYPE_NAMES, SHARD_COUNT, formatInodeId, inodeType, shardOf } from '../proto/ids.js';
import { DEFAULT_SHUCKLE_URL } from '../proto/ports.js';
import { formatEggsTime } from '../proto/time.js';
import { EggsClient, PathError, type ClientOptions, type DirEntryWithAttrs } from '../client/index.js';
import { parseParityOption } from '../client/span-layout.js';
import { UsageError, parseHostPort, parseIntArg } from '../util/args.js';

interface CommandSpec {
  args: string[];
  summary: string;
  flags?: Record<string, string>; // name → help; names ending in '=' take a value
  run(c: Ctx): Promise<number | void>;
}

interface Ctx {
  pos: string[];
  flags: Map<string, string | true>;
  client(): Promise<EggsClient>;
  out: NodeJS.WriteStream;
}

const COPY_INTO_SPAN_BYTES = 32 << 20;

const COMMON_FLAGS: Record<string, string> = {
  'shuckle=': `shuckle URL of the cluster (default $EGGSFS_SHUCKLE or ${DEFAULT_SHUCKLE_URL})`,
  'timeout-ms=': 'time to wait for each metadata answer before resending (default 2000)',
  'shards=': 'HOST:BASE_PORT of the 256 shards, without shuckle (e.g. 127.0.0.1:22272; needs --cdc)',
  'cdc=': 'HOST:PORT of the CDC, without shuckle (e.g. 127.0.0.1:36137)',
  help: 'show this help',
};

const WRITE_FLAGS: Record<string, string> = {
  'parity=': 'redundancy of new spans: D+P (D data + P parity blocks, e.g. 4+2; 1+P = P+1 mirrored copies; 1+0 = none) or the parity byte (default: 4+2 on clusters of 7 or more block services, else 1+0)',
  'span-bytes=': 'bytes per span (default 32 MiB for copy_into, 8 MiB otherwise)',
  'no-progress': 'never show a progress bar',
};

function typeOf(id: bigint): string {
  return INODE_TYPE_NAMES[inodeType(id)];
}

function humanBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(1)} ${units[i]}`;
}

/** A progress bar on stderr, only when stderr is a terminal and the copy is big enough to wait for. */
function progressMeter(label: string, total: number | undefined, enabled: boolean): { add(n: number): void; end(): void } {
  const MIN_BYTES_FOR_BAR = 8 << 20;
  const REDRAW_MS = 200;
  const show = enabled && process.stderr.isTTY === true && (total === undefined || total >= MIN_BYTES_FOR_BAR);
  let done = 0;
  let last = 0;
  const t0 = Date.now();
  const draw = (final: boolean) => {
    const secs = Math.max((Date.now() - t0) / 1000, 0.001);
    const rate = `${humanBytes(done / secs)}/s`;
    let line: string;
    if (total) {
      const frac = Math.min(1, done / total);
      const width = 30;
      const fillN = Math.round(frac * width);
      line = `${label} [${'#'.repeat(fillN)}${'.'.repeat(width - fillN)}] ${(frac * 100).toFixed(0).padStart(3)}% ${humanBytes(done)} ${rate}`;
    } else {
      line = `${label} ${humanBytes(done)} ${rate}`;
    }
    process.stderr.write(`\r${line}\x1b[K${final ? '\n' : ''}`);
  };
  return {
    add(n) {
      done += n;
      if (show && Date.now() - last > REDRAW_MS) {
        last = Date.now();
        draw(false);
      }
    },
    end() {
      if (show) draw(true);
    },
  };
}

/** progressMeter as a pass-through stream stage. */
function progress(label: string, total: number | undefined, enabled: boolean): Transform {
  const meter = progressMeter(label, total, enabled);
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      meter.add(chunk.length);
      cb(null, chunk);
    },
    flush(cb) {
      meter.end();
      cb();
    },
  });
}

function spanOpts(c: Ctx): Partial<ClientOptions> {
  const o: Partial<ClientOptions> = {};
  const p = c.flags.get('parity');
  if (typeof p === 'string') {
    try {
      o.parity = parseParityOption(p);
    } catch (err) {
      throw new UsageError(`--parity: ${(err as Error).message}`);
    }
  }
  const s = c.flags.get('span-bytes');
  if (typeof s === 'string') o.spanBytes = parseIntArg('span-bytes', s, 256, 64 << 20);
  return o;
}

let extraClientOpts: Partial<ClientOptions> = {};

async function copyInto(c: Ctx, dest: string, input: Readable, total: number | undefined): Promise<void> {
  const client = await c.client();
  const out = client.createWriteStream(dest);
  await pipeline(input, progress(`copy_into ${dest}`, total, !c.flags.has('no-progress')), out);
}

/** Bytes asked of the local file per read: big reads, few syscalls, a progress bar that moves. */
const COPY_READ_BYTES = 8 << 20;

/**
 * A local file into `dest`, read straight into the writer's span buffers (no intermediate buffers
 * to allocate, fault in and copy again; profile of a 512 MiB copy: about a fifth of its CPU).
 */
async function copyFileInto(c: Ctx, dest: string, src: string, total: number): Promise<void> {
  const client = await c.client();
  let fh: FileHandle;
  try {
    fh = await fsOpen(src, 'r');
  } catch (err) {
    throw new LocalError(`copy_into ${dest}: cannot read ${src}: ${localCause(err)}`);
  }
  const meter = progressMeter(`copy_into ${dest}`, total, !c.flags.has('no-progress'));
  try {
    const writer = await client.openWriter(dest);
    if (!writer.writeFrom) throw new Error('copy_into: the file writer cannot be filled in place');
    try {
      for (;;) {
        const n = await writer.writeFrom(async (dst) => {
          try {
            // From the current position: pipes and character devices read too.
            return (await fh.read(dst, 0, dst.length, null)).bytesRead;
          } catch (err) {
            throw new LocalError(`copy_into ${dest}: cannot read ${src}: ${localCause(err)}`);
          }
        }, COPY_READ_BYTES);
        if (n === 0) break;
        meter.add(n);
      }
      await writer.close();
    } catch (err) {
      await writer.abort();
      throw err;
    }
    meter.end();
  } finally {
    await fh.close();
  }
}

const COMMANDS: Record<string, CommandSpec> = {
  ls: {
    args: ['[PATH]'],
    summary: 'list a directory (default /); -l shows type, size, mtime and id',
    flags: { l: 'long listing' },
    async run(c) {
      const path = c.pos[0] ?? '/';
      const client = await c.client();
      const long = c.flags.has('l');
      const batch: DirEntryWithAttrs[] = [];
      const flush = async () => {
        if (long) {
          // Sizes the listing carried need no STAT; directories and files of other shards do.
          const stats = await Promise.all(batch.map((e) => (e.attrs ? e.attrs : client.statId(e.id).catch(() => undefined))));
          batch.forEach((e, i) => {
            const s = stats[i];
            const size = s ? String(s.size) : '?';
            const mtime = s ? formatEggsTime(s.mtime) : '?';
            c.out.write(`${typeOf(e.id).padEnd(9)} ${size.padStart(12)} ${mtime} ${formatInodeId(e.id)} ${e.name}${typeOf(e.id) === 'directory' ? '/' : ''}\n`);
          });
        } else {
          for (const e of batch) c.out.write(`${e.name}${typeOf(e.id) === 'directory' ? '/' : ''}\n`);
        }
        batch.length = 0;
      };
      for await (const e of client.readDir(path, { withAttrs: long })) {
        batch.push(e);
        if (batch.length >= 256) await flush();
      }
      await flush();
    },
  },
  stat: {
    args: ['PATH'],
    summary: 'show id, type, size (files) or owner (directories) and mtime',
    async run(c) {
      const path = need(c, 0, 'PATH');
      const s = await (await c.client()).stat(path);
      c.out.write(`id: ${formatInodeId(s.id)}\ntype: ${s.type}\nshard: ${shardOf(s.id)}\n`);
      if (s.type === 'directory') c.out.write(`owner: ${formatInodeId(s.ownerId ?? 0n)}\n`);
      else c.out.write(`size: ${s.size}\n`);
      c.out.write(`mtime: ${formatEggsTime(s.mtime)}\n`);
    },
  },
  lookup: {
    args: ['PATH'],
    summary: 'show the inode id, type and shard of a path',
    async run(c) {
      const id = await (await c.client()).resolve(need(c, 0, 'PATH'));
      c.out.write(`${formatInodeId(id)} ${typeOf(id)} shard ${shardOf(id)}\n`);
    },
  },
  cat: {
    args: ['PATH'],
    summary: 'print a file to stdout',
    async run(c) {
      const client = await c.client();
      await pipeline(client.createReadStream(need(c, 0, 'PATH')), c.out);
    },
  },
  mkdir: {
    args: ['PATH'],
    summary: 'make a directory (-p: and its missing parents, no error if it exists)',
    flags: { p: 'make parents as needed' },
    async run(c) {
      const path = need(c, 0, 'PATH');
      const client = await c.client();
      if (!c.flags.has('p')) {
        await client.mkdir(path);
        return;
      }
      const names = path.split('/').filter((n) => n && n !== '.');
      if (!path.startsWith('/')) await client.mkdir(path); // reports the relative path
      for (let i = 1; i <= names.length; i++) {
        const p = '/' + names.slice(0, i).join('/');
        try {
          await client.mkdir(p);
        } catch (err) {
          if (!(err instanceof PathError && errorName(err.code) === 'CANNOT_OVERRIDE_NAME')) throw err;
          const s = await client.stat(p);
          if (s.type !== 'directory') throw new PathError('mkdir', path, err.code, `${p} exists and is not a directory`);
        }
      }
    },
  },
  echo_into: {
    args: ['PATH', 'STRING'],
    summary: 'write STRING and a newline into a new file PATH (-n: no newline)',
    flags: { n: 'do not add a newline', ...WRITE_FLAGS },
    async run(c) {
      const path = need(c, 0, 'PATH');
      const text = need(c, 1, 'STRING') + (c.flags.has('n') ? '' : '\n');
      const client = await c.client();
      const out = client.createWriteStream(path);
      await pipeline([Buffer.from(text, 'utf8')], out);
    },
  },
  copy_into: {
    args: ['DEST', 'SRC'],
    summary: 'copy the local file SRC (- for stdin) into the new EggsFS file DEST',
    flags: WRITE_FLAGS,
    async run(c) {
      const dest = need(c, 0, 'DEST');
      const src = need(c, 1, 'SRC');
      if (src === '-') return copyInto(c, dest, process.stdin, undefined);
      let total: number;
      try {
        const st = await fsStat(src);
        if (st.isDirectory()) throw new LocalError(`copy_into ${dest}: ${src} is a directory`);
        total = st.size;
      } catch (err) {
        if (err instanceof LocalError) throw err;
        throw new LocalError(`copy_into ${dest}: cannot read ${src}: ${localCause(err)}`);
      }
      await copyFileInto(c, dest, src, total);
    },
  },
  copy_out: {
    args: ['SRC', 'DEST'],
    summary: 'copy the EggsFS file SRC into the local file DEST (- for stdout)',
    flags: { 'no-progress': 'never show a progress bar' },
    async run(c) {
      const src = need(c, 0, 'SRC');
      let dest = need(c, 1, 'DEST');
      const client = await c.client();
      const st = await client.stat(src);
      // Into an existing local directory, under the file's own name (as cp does).
      if (dest !== '-' && (await fsStat(dest).catch(() => undefined))?.isDirectory()) dest = path.join(dest, src.split('/').filter(Boolean).pop() ?? 'file');
      if (st.type === 'directory') throw new PathError('copy_out', src, 20, 'is a directory');
      const output: Writable = dest === '-' ? c.out : createWriteStream(dest, { highWaterMark: 1 << 20 });
      output.on('error', () => {});
      try {
        await pipeline(client.createReadStream(src), progress(`copy_out ${src}`, st.size, !c.flags.has('no-progress')), output);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).syscall) throw new LocalError(`copy_out ${src}: cannot write ${dest}: ${localCause(err)}`);
        throw err;
      }
    },
  },
  mv: {
    args: ['FROM', 'TO'],
    summary: 'rename or move a file or directory (into TO if TO is a directory)',
    async run(c) {
      const from = need(c, 0, 'FROM');
      let to = need(c, 1, 'TO');
      const client = await c.client();
      const dest = await client.stat(to).catch(() => undefined);
      if (dest?.type === 'directory') {
        const base = from.split('/').filter(Boolean).pop();
        if (base) to = to.replace(/\/+$/, '') + '/' + base;
      }
      await client.rename(from, to);
    },
  },
  rm: {
    args: ['PATH'],
    summary: 'remove a file',
    async run(c) {
      await (await c.client()).unlink(need(c, 0, 'PATH'));
    },
  },
  rmdir: {
    args: ['PATH'],
    summary: 'remove an empty directory',
    async run(c) {
      await (await c.client()).rmdir(need(c, 0, 'PATH'));
    },
  },
  transient_files: {
    args: [],
    summary: 'list files being written (not yet linked) on every shard',
    async run(c) {
      const client = await c.client();
      const PARALLEL_SHARDS = 16;
      const results: string[][] = [];
      let next = 0;
      await Promise.all(
        [...Array(PARALLEL_SHARDS)].map(async () => {
          while (next < SHARD_COUNT) {
            const shard = next++;
            const lines: string[] = [];
            for await (const f of client.transientFiles(shard)) {
              lines.push(`${formatInodeId(f.id)} ${typeOf(f.id)} shard ${shardOf(f.id)} deadline ${formatEggsTime(f.deadlineTime)}`);
            }
            results[shard] = lines;
          }
        }),
      );
      for (const lines of results) for (const l of lines ?? []) c.out.write(l + '\n');
    },
  },
};
COMMANDS.rm_file = { ...COMMANDS.rm!, summary: 'remove a file (the original name of rm)' };
COMMANDS.rm_dir = { ...COMMANDS.rmdir!, summary: 'remove an empty directory (the original name of rmdir)' };

class LocalError extends Error {}

function localCause(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  const words: Record<string, string> = { ENOENT: 'no such file or directory', EACCES: 'permission denied', EISDIR: 'is a directory', ENOSPC: 'no space left on device' };
  return (e.code && words[e.code]) ?? e.message;
}

function need(c: Ctx, i: number, what: string): string {
  const v = c.pos[i];
  if (v === undefined) throw new UsageError(`missing ${what}`);
  return v;
}

function helpText(name: string, spec: CommandSpec): string {
  const flags = { ...(spec.flags ?? {}), ...COMMON_FLAGS };
  const lines = Object.entries(flags).map(([f, h]) => {
    const n = f.endsWith('=') ? f.slice(0, -1) : f;
    const flag = (n.length === 1 ? `-${n}` : `--${n}`) + (f.endsWith('=') ? ' VALUE' : '');
    return `  ${flag.padEnd(20)} ${h}`;
  });
  return `usage: eggsfs ${name} ${spec.args.join(' ')}\n\n${spec.summary}\n\noptions:\n${lines.join('\n')}\n`;
}

function parse(name: string, spec: CommandSpec, argv: string[]): { pos: string[]; flags: Map<string, string | true> } {
  const known = { ...(spec.flags ?? {}), ...COMMON_FLAGS };
  const pos: string[] = [];
  const flags = new Map<string, string | true>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      pos.push(...argv.slice(i + 1));
      break;
    }
    if (a.startsWith('-') && a !== '-') {
      if (a === '-h') {
        flags.set('help', true);
        continue;
      }
      const eq = a.indexOf('=');
      const key = a.replace(/^--?/, '').slice(0, eq < 0 ? undefined : eq - (a.startsWith('--') ? 2 : 1));
      if (key in known) {
        flags.set(key, true);
        continue;
      }
      if (`${key}=` in known) {
        const v = eq >= 0 ? a.slice(eq + 1) : argv[++i];
        if (v === undefined) throw new UsageError(`--${key} needs a value`);
        flags.set(key, v);
        continue;
      }
      throw new UsageError(`unknown option ${a} (see eggsfs ${name} --help)`);
    }
    pos.push(a);
  }
  return { pos, flags };
}

/** One line for a failure: the path and the cause, or why the cluster cannot be reached. */
export function describeFailure(err: unknown, command: string): string {
  if (err instanceof PathError) return `${command} ${err.path}: ${err.reason}`; // the command the user typed
  if (err instanceof LocalError) return err.message;
  if (err instanceof EggsError) return `${describeError(err.code)} (${err.message})`;
  const msg = (err as Error)?.message ?? String(err);
  if (/unreachable|ECONNREFUSED|no CDC is registered|no shard is registered/.test(msg)) {
    return `no cluster running: ${msg}; start one with "eggsfs run DATA_DIR" or point --shuckle / EGGSFS_SHUCKLE at one`;
  }
  return msg.split('\n')[0]!;
}

export async function run(argv: string[], name: string): Promise<number> {
  const spec = COMMANDS[name];
  if (!spec) throw new UsageError(`unknown client command ${name}`);
  const { pos, flags } = parse(name, spec, argv);
  if (flags.has('help')) {
    process.stdout.write(helpText(name, spec));
    return 0;
  }
  const shuckleUrl = (flags.get('shuckle') as string | undefined) ?? process.env.EGGSFS_SHUCKLE ?? DEFAULT_SHUCKLE_URL;
  let client: EggsClient | undefined;
  const ctx: Ctx = {
    pos,
    flags,
    out: process.stdout,
    async client() {
      const t = flags.get('timeout-ms');
      const opts: ClientOptions = { shuckleUrl, ...spanOpts(ctx), ...extraClientOpts };
      // Whole-file copies can afford bigger spans than a library default that also serves many
      // files open at once (FUSE): fewer round trips and fsyncs per byte.
      if (name === 'copy_into' && !flags.has('span-bytes')) opts.spanBytes = COPY_INTO_SPAN_BYTES;
      // Direct addressing, for clusters whose shuckle predates shard/CDC discovery (the original).
      const shards = flags.get('shards');
      const cdc = flags.get('cdc');
      if (typeof shards === 'string' || typeof cdc === 'string') {
        if (typeof shards !== 'string' || typeof cdc !== 'string') throw new UsageError('--shards and --cdc go together');
        const s = parseHostPort(shards, '127.0.0.1');
        const d = parseHostPort(cdc, '127.0.0.1');
        delete opts.shuckleUrl;
        Object.assign(opts, { shardHost: s.host, shardBasePort: s.port, cdcHost: d.host, cdcPort: d.port });
      }
      if (typeof t === 'string') opts.timeoutMs = parseIntArg('timeout-ms', t, 1, 600_000);
      client ??= await EggsClient.connect(opts);
      return client;
    },
  };
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0); // `eggsfs cat F | head` is not an error
  });
  try {
    const code = await spec.run(ctx);
    return typeof code === 'number' ? code : 0;
  } catch (err) {
    if (err instanceof UsageError) throw err;
    if ((err as NodeJS.ErrnoException).code === 'EPIPE') return 0;
    process.stderr.write(`${describeFailure(err, name)}\n`);
    return 1;
  } finally {
    await client?.close();
  }
}

/** For tests and embedding: options merged into every client this module makes. */
export function setExtraClientOptions(o: Partial<ClientOptions>): void {
  extraClientOpts = o;
}
