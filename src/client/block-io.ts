// Block-service I/O as the file reader and writer need it, over the pooled TCP client of
// ./blocks.js: addresses from the wire's ip4 bytes, and a check that a fetched block has the size
// the metadata recorded.
import { BlockClient, BlockServiceError } from './blocks.js';
import { crc32c } from '../proto/crc32c.js';

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

/** A fetched block as the socket's chunks (views of the receive slabs, never copied) and their CRC. */
export interface BlockChunks {
  chunks: Buffer[];
  crc: number;
}

/**
 * A whole block as the socket delivered it, its size checked against the metadata and its CRC
 * computed chunk by chunk (no copy into one buffer: a reader that streams the chunks in order
 * moves each byte once, into its consumer).
 */
export async function fetchBlockChunks(bc: BlockClient, ip: Buffer, port: number, blockId: bigint, expectedSize: number): Promise<BlockChunks> {
  const addr = { ip: ipToString(ip), port };
  const chunks = await bc.fetchChunks(addr, blockId);
  let size = 0;
  let crc = 0;
  for (const c of chunks) {
    size += c.length;
    crc = crc32c(c, crc);
  }
  if (size !== expectedSize) throw new BlockServiceError(`${addr.ip}:${port}`, 'fetch', `block has ${size} bytes, the metadata says ${expectedSize}`, blockId);
  return { chunks, crc };
}
