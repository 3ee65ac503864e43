// Port allocation for tests: every test binds its own free ports so that tests (and developers
// running tests side by side) never collide on the default ports.
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import net from 'node:net';

/**
 * Test ports come from below the kernel's ephemeral range, so that no client socket opened by any
 * test (or anything else on the machine) can take a port between our check and the service's bind.
 */
const LOWEST_TEST_PORT = 10_000;
const ephemeralLow = (() => {
  try {
    return Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || 32_768;
  } catch {
    return 32_768;
  }
})();

/** A random base port such that base..base+count-1 lie in the test range. */
export function randomBasePort(count: number): number {
  const high = Math.max(LOWEST_TEST_PORT + count + 1, ephemeralLow) - count;
  return LOWEST_TEST_PORT + Math.floor(Math.random() * (high - LOWEST_TEST_PORT));
}

export async function freeTcpPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

async function udpFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    s.once('error', () => resolve(false));
    s.bind(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

async function tcpFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

const RANGE_ATTEMPTS = 100;

/** A base port such that base..base+count-1 are all free right now for the given protocols. */
async function freeRange(count: number, protocols: { tcp: boolean; udp: boolean }): Promise<number> {
  for (let attempt = 0; attempt < RANGE_ATTEMPTS; attempt++) {
    const base = randomBasePort(count);
    let ok = true;
    for (let i = 0; i < count && ok; i++) {
      ok = (!protocols.tcp || (await tcpFree(base + i))) && (!protocols.udp || (await udpFree(base + i)));
    }
    if (ok) return base;
  }
  throw new Error(`no free ${protocols.tcp ? 'TCP' : ''}${protocols.tcp && protocols.udp ? '+' : ''}${protocols.udp ? 'UDP' : ''} range of ${count} ports`);
}

export function freeUdpRange(count: number): Promise<number> {
  return freeRange(count, { tcp: false, udp: true });
}

/** base..base+count-1 free for TCP (and for UDP too when `udp`, e.g. shuckle's HTTP+UDP port). */
export function freeTcpRange(count: number, udp = false): Promise<number> {
  return freeRange(count, { tcp: true, udp });
}

export async function freeUdpPort(): Promise<number> {
  return freeUdpRange(1);
}
