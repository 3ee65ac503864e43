// The `eggsfs` command: one entry point for every service and every client command. Each
// subcommand lives in its own module and is loaded only when used, so starting a shard does not
// load the FUSE driver and vice versa.
import { UsageError } from '../util/args.js';
import { EggsError } from '../proto/errors.js';
import { EXIT_WITH_PARENT_ENV, exitWithParent } from '../util/lifecycle.js';

export interface Command {
  readonly summary: string;
  /** Module that exports `run(argv: string[], name: string): Promise<number | void>`. */
  readonly module: string;
}

/** Services and cluster management. Client commands are listed by ./commands.js. */
const SERVICE_COMMANDS: Record<string, Command> = {
  run: { summary: 'start a whole cluster on this machine: eggsfs run <data-dir>', module: '../cluster/main.js' },
  shard: { summary: 'serve metadata shards: eggsfs shard --shards 0-255 --dir D', module: '../shard/main.js' },
  cdc: { summary: 'serve the cross-directory coordinator', module: '../cdc/main.js' },
  blocks: { summary: 'serve block services, one per directory', module: '../blocks/main.js' },
  shuckle: { summary: 'serve the registry and its web page', module: '../shuckle/main.js' },
  mount: { summary: 'mount EggsFS with FUSE: eggsfs mount <mountpoint>', module: '../fuse/main.js' },
};

async function clientCommands(): Promise<Record<string, Command>> {
  try {
    const m = (await import('./commands.js')) as { CLIENT_COMMANDS: Record<string, Command> };
    return m.CLIENT_COMMANDS;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND') return {};
    throw err;
  }
}

function usage(all: Record<string, Command>): string {
  const width = Math.max(...Object.keys(all).map((k) => k.length));
  const lines = Object.entries(all).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`);
  return `usage: eggsfs <command> [options]\n\ncommands:\n${lines.join('\n')}\n\nRun "eggsfs <command> --help" for a command's options.\n`;
}

export async function main(argv: string[]): Promise<void> {
  if (process.env[EXIT_WITH_PARENT_ENV] === '1') exitWithParent();
  const all = { ...SERVICE_COMMANDS, ...(await clientCommands()) };
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage(all));
    if (!name) process.exitCode = 2;
    return;
  }
  const cmd = all[name];
  if (!cmd) {
    process.stderr.write(`eggsfs: unknown command "${name}"\n\n${usage(all)}`);
    process.exitCode = 2;
    return;
  }
  try {
    const mod = (await import(cmd.module)) as { run(argv: string[], name: string): Promise<number | void> };
    const code = await mod.run(rest, name);
    if (typeof code === 'number') process.exitCode = code;
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`eggsfs ${name}: ${err.message}\n`);
      process.exitCode = 2;
    } else if (err instanceof EggsError) {
      process.stderr.write(`eggsfs ${name}: ${err.message}\n`);
      process.exitCode = 1;
    } else {
      throw err;
    }
  }
}
