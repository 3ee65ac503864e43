// Real processes for integration tests: `eggsfs <subcommand>` started from the compiled tree,
// with helpers to wait for its readiness line, collect its output, and kill it (gently or -9).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const EGGSFS_BIN = path.join(REPO_ROOT, 'bin', 'eggsfs.js');

export interface Service {
  readonly proc: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves with the first stdout line matching `re`; rejects if the process exits first. */
  waitFor(re: RegExp, timeoutMs?: number): Promise<string>;
  /** Resolves with the exit code (or signal name). */
  exited(): Promise<number | string>;
  kill(signal?: NodeJS.Signals): Promise<number | string>;
}

export function startEggsfs(args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Service {
  const proc = spawn(process.execPath, [EGGSFS_BIN, ...args], {
    env: { ...process.env, ...opts.env },
    cwd: opts.cwd ?? REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  const waiters: { re: RegExp; resolve: (l: string) => void }[] = [];
  let exitValue: number | string | undefined;
  const exitWaiters: ((v: number | string) => void)[] = [];
  proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
    out += d;
    for (const w of [...waiters]) {
      const line = out.split('\n').find((l) => w.re.test(l));
      if (line !== undefined) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(line);
      }
    }
  });
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => {
    err += d;
    if (process.env.EGGSFS_TEST_VERBOSE) process.stderr.write(d);
  });
  proc.on('exit', (code, signal) => {
    exitValue = code ?? signal ?? 'unknown';
    for (const w of exitWaiters.splice(0)) w(exitValue);
  });
  const exited = () =>
    new Promise<number | string>((resolve) => (exitValue !== undefined ? resolve(exitValue) : exitWaiters.push(resolve)));
  return {
    proc,
    stdout: () => out,
    stderr: () => err,
    waitFor(re, timeoutMs = 30_000) {
      const line = out.split('\n').find((l) => re.test(l));
      if (line !== undefined) return Promise.resolve(line);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out waiting for ${re} from eggsfs ${args.join(' ')}\nstderr:\n${err}`)), timeoutMs);
        waiters.push({
          re,
          resolve: (l) => {
            clearTimeout(timer);
            resolve(l);
          },
        });
        void exited().then((v) => {
          clearTimeout(timer);
          reject(new Error(`eggsfs ${args.join(' ')} exited (${v}) before printing ${re}\nstderr:\n${err}`));
        });
      });
    },
    exited,
    async kill(signal = 'SIGTERM') {
      if (exitValue === undefined) proc.kill(signal);
      return exited();
    },
  };
}

/** Run `eggsfs ...` to completion. */
export function runEggsfs(
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; input?: string | Buffer; timeoutMs?: number } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [EGGSFS_BIN, ...args], {
      env: { ...process.env, ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    proc.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    proc.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`eggsfs ${args.join(' ')} timed out\nstderr:\n${stderr}`));
    }, opts.timeoutMs ?? 60_000);
    proc.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    proc.stdin.end(opts.input ?? '');
  });
}

export function tempDir(prefix: string): { path: string; remove(): void } {
  const p = mkdtempSync(path.join(process.env.EGGSFS_TEST_TMP ?? tmpdir(), `eggsfs-${prefix}-`));
  return { path: p, remove: () => rmSync(p, { recursive: true, force: true }) };
}
