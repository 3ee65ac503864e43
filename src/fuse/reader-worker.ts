// One reader of /dev/fuse. A read on the device blocks until the kernel has a request, so each
// reader runs in its own worker thread (not in libuv's small shared threadpool, which blocked
// reads would starve). Each read returns exactly one request; the worker copies it out of its
// big buffer and hands it to the main thread, which decodes, serves and replies.
import { readSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';

interface ReaderData {
  fd: number;
  bufferBytes: number;
}

const { fd, bufferBytes } = workerData as ReaderData;
const port = parentPort!;
const buffer = Buffer.allocUnsafe(bufferBytes);

for (;;) {
  let n: number;
  try {
    n = readSync(fd, buffer, 0, bufferBytes, null);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // ENOENT: the request was interrupted before we read it; EINTR/EAGAIN: just try again.
    if (code === 'ENOENT' || code === 'EINTR' || code === 'EAGAIN') continue;
    // ENODEV: unmounted. Anything else (EBADF after close) also ends this reader.
    port.postMessage({ end: code ?? String(err) });
    break;
  }
  if (n === 0) {
    port.postMessage({ end: 'EOF' });
    break;
  }
  const copy = new Uint8Array(n);
  copy.set(buffer.subarray(0, n));
  port.postMessage(copy, [copy.buffer]);
}
