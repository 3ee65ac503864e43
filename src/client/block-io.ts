// Block-service I/O as the file reader and writer need it, over the pooled TCP client of
// ./blocks.js: addresses from the wire's ip4 bytes, and a check that a fetched block has the size
// the metadata recorded.
import { BlockClient, BlockServiceError } from './blocks.js';

export { BlockServiceError as BlockIoError } from './blocks.js';

export function ipToString(ip: Buffer): string {
  return `${ip[0]}.${ip[1]}.${ip[2]}.${ip[3]}`;
}

export function newBlockClient(ioTimeoutMs: number): BlockClient {
  return new BlockClient({ ioTimeoutMs });
}

export function writeBlock(bc: BlockClient, ip: Buffer, port: number, blockId: bigint, crc: number, data: Buffer, certificate: Buffer): Promise<Buffer> {
  return bc.write({ ip: ipToString(ip), port }, blockId, crc, data, certificate);
}

export async function fetchBlock(bc: BlockClient, ip: Buffer, port: number, blockId: bigint, expectedSize: number): Promise<Buffer> {
  const addr = { ip: ipToString(ip), port };
  const data = await bc.fetch(addr, blockId);
  if (data.length !== expectedSize) throw new BlockServiceError(`${addr.ip}:${port}`, 'fetch', `block has ${data.length} bytes, the metadata says ${expectedSize}`, blockId);
  return data;
}
