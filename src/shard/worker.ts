// A worker thread hosting one group of shards (eggsfs shard --threads N). Each worker has its
// own event loop, sockets and databases, so requests never cross threads; the main thread only
// forwards shuckle's block-service list and the stop signal.
import { parentPort, workerData } from 'node:worker_threads';
import { logger } from '../util/log.js';
import { hostShards, type HostOptions } from './host.js';

export type ToWorker = { type: 'blockServices'; entries: unknown[]; seq: number } | { type: 'stop' };
export type FromWorker =
  | { type: 'ready' }
  | { type: 'applied'; seq: number }
  | { type: 'stopped'; stats: Record<string, number> }
  | { type: 'failed'; message: string };

const port = parentPort!;
const opts = workerData as HostOptions;
const log = logger(`shard[${opts.shards[0]}..]`);

hostShards(opts, log).then(
  (host) => {
    port.on('message', (m: ToWorker) => {
      if (m.type === 'blockServices') {
        host.applyBlockServices(m.entries as never);
        port.postMessage({ type: 'applied', seq: m.seq } satisfies FromWorker);
      } else if (m.type === 'stop') {
        const stats = host.stats();
        host.close();
        port.postMessage({ type: 'stopped', stats: { ...stats } } satisfies FromWorker);
        port.close();
      }
    });
    port.postMessage({ type: 'ready' } satisfies FromWorker);
  },
  (err: Error) => port.postMessage({ type: 'failed', message: err.message } satisfies FromWorker),
);
