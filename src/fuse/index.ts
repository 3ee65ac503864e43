// Mounting EggsFS: in this process (`serveEggsfs`, what `eggsfs mount` runs) or as a child
// `eggsfs mount` process (`mountEggsfs`, for `eggsfs run --mount` and tests: a driver problem
// then cannot take the caller down, and the caller's event loop is not the driver's).
import { spawn, type ChildProcess } from 'node:child_process';
import { realpathSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { EggsClient, type ClientOptions } from '../client/index.js';
import { EggsFs } from './eggsfs.js';
import { clearStaleMount, lazyUnmount, mountFuse, type FuseSession } from './kernel.js';

export { EggsFs } from './eggsfs.js';
export { mountFuse, lazyUnmount, type FuseSession } from './kernel.js';

/** Kernel read-ahead for the mount (the bdi default is 128 KiB). */
export const MOUNT_READ_AHEAD_BYTES = 8 << 20;

export interface ServeOptions {
  readers?: number;
}

export interface ServedMount {
  session: FuseSession;
  client: EggsClient;
  fs: EggsFs;
  /** Unmounts, waits for the kernel connection to end, closes the client. */
  unmount(): Promise<void>;
}

/** Connects a client and serves it at `mountpoint` from this process. */
export async function serveEggsfs(mountpoint: string, clientOptions: ClientOptions, opts: ServeOptions = {}): Promise<ServedMount> {
  await clearStaleMount(mountpoint);
  const client = await EggsClient.connect(clientOptions);
  const fs = new EggsFs(client, { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, mountpoint: realpathSync(mountpoint) });
  let session: FuseSession;
  try {
    session = await mountFuse(mountpoint, fs, { readers: opts.readers, readAheadBytes: MOUNT_READ_AHEAD_BYTES, subtype: 'eggsfs', fsname: 'eggsfs' });
  } catch (err) {
    await client.close();
    throw err;
  }
  let closing: Promise<void> | undefined;
  void session.closed.then(() => client.close());
  return {
    session,
    client,
    fs,
    unmount: () => (closing ??= session.unmount().then(() => client.close())),
  };
}

export interface MountHandle {
  readonly mountpoint: string;
  readonly process: ChildProcess;
  /** Unmounts (SIGTERM to the driver, which unmounts and exits) and waits for the exit. */
  unmount(): Promise<void>;
}

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../bin/eggsfs.js');
const MOUNT_READY_TIMEOUT_MS = 30_000;
const MOUNT_EXIT_TIMEOUT_MS = 15_000;

/**
 * Starts `eggsfs mount <mountpoint> --shuckle URL` as a child process and resolves once it
 * serves. Its stderr goes to the caller's stderr.
 */
export async function mountEggsfs(mountpoint: string, opts: { shuckleUrl: string; parity?: string; extraArgs?: string[] }): Promise<MountHandle> {
  const args = [BIN, 'mount', mountpoint, '--shuckle', opts.shuckleUrl, ...(opts.parity ? ['--parity', opts.parity] : []), ...(opts.extraArgs ?? [])];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<number | string>((resolve) => child.on('exit', (code, sig) => resolve(code ?? sig ?? 'unknown')));
  await new Promise<void>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`mount ${mountpoint}: the driver did not get ready within ${MOUNT_READY_TIMEOUT_MS} ms`));
    }, MOUNT_READY_TIMEOUT_MS);
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (/^ready mount /m.test(out)) {
        clearTimeout(timer);
        resolve();
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`mount ${mountpoint}: the driver exited (${code}) before it served`));
    });
  });
  child.stdout!.resume();
  return {
    mountpoint,
    process: child,
    async unmount() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), MOUNT_EXIT_TIMEOUT_MS);
      await exited;
      clearTimeout(t);
      await lazyUnmount(mountpoint); // in case the driver died without unmounting
    },
  };
}
