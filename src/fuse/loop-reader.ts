// Reading /dev/fuse on the main thread's event loop, without reader threads: the device supports
// poll and non-blocking reads, so libuv can watch it like a pipe. Each readiness gives one read of
// one request into a fixed buffer, copied out for the (asynchronous) handler. This saves the hop
// from a reader thread to the main thread (a thread wake-up and a MessagePort message, 35-50 µs
// per request here) on every request.
//
// Node has no public way to poll an arbitrary descriptor, so this opens it as a libuv pipe through
// the `pipe_wrap` binding (uv_pipe_open takes any pollable descriptor; it makes it non-blocking).
// Where that binding is missing, `startLoopReader` returns undefined and the caller uses threads.
import assert from 'node:assert/strict';
import net from 'node:net';

export interface LoopReader {
  /** Stops reading; closes the descriptor (libuv owns it from the start). */
  stop(): void;
}

interface PipeBinding {
  Pipe: new (type: number) => { open(fd: number): number };
  constants: { SOCKET: number };
}

function pipeBinding(): PipeBinding | undefined {
  try {
    // process.binding is deprecated but present in Node 20-22; pipe_wrap is on its allow-list.
    const b = (process as unknown as { binding?: (name: string) => unknown }).binding?.('pipe_wrap') as PipeBinding | undefined;
    return b && typeof b.Pipe === 'function' && typeof b.constants?.SOCKET === 'number' ? b : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Reads requests from `fd` on this thread: `onRequest` gets each request in a buffer of its own;
 * `onEnd` is called once when reading stops (the error code: ENODEV once unmounted). The
 * descriptor then belongs to the reader: it is closed when reading ends, never by the caller.
 * Undefined when this Node has no such reader (use threads); throws if the descriptor cannot be
 * watched.
 */
export function startLoopReader(
  fd: number,
  bufferBytes: number,
  onRequest: (request: Buffer) => void,
  onEnd: (why: string) => void,
): LoopReader | undefined {
  const binding = pipeBinding();
  if (!binding) return undefined;
  const handle = new binding.Pipe(binding.constants.SOCKET);
  // No falling back to threads past this point: opening may have made the descriptor
  // non-blocking, and a reader thread would then spin on EAGAIN.
  const rc = handle.open(fd);
  if (rc !== 0) throw new Error(`cannot watch /dev/fuse on the event loop (libuv error ${rc})`);
  // One read of the device returns exactly one request, and needs room for the largest.
  const buffer = Buffer.allocUnsafe(bufferBytes);
  let ended = false;
  const end = (why: string) => {
    if (ended) return;
    ended = true;
    onEnd(why);
  };
  const socket = new net.Socket({
    handle: handle as never,
    readable: true,
    writable: false,
    onread: {
      buffer,
      callback: (bytes: number) => {
        assert(bytes > 0 && bytes <= bufferBytes, 'one request per read');
        // The handler keeps the request past this call (it is served asynchronously), and the
        // next read reuses `buffer`: copy it out.
        const request = Buffer.allocUnsafe(bytes);
        buffer.copy(request, 0, 0, bytes);
        onRequest(request);
        return true;
      },
    },
  } as net.SocketConstructorOpts);
  socket.on('error', (err: NodeJS.ErrnoException) => end(err.code ?? err.message));
  socket.on('end', () => end('EOF'));
  socket.on('close', () => end('closed'));
  return {
    stop() {
      socket.destroy();
    },
  };
}
