// Default addresses of the original single-host deployment. Every service takes its bind address
// and port from options; these are only the defaults.
export const DEFAULT_HOST = '127.0.0.1';
export const SHARD_BASE_PORT = 22272;
export const CDC_PORT = 36137;
export const SHUCKLE_HTTP_PORT = 5000;
export const SHUCKLE_UDP_PORT = 5000;
export const BLOCK_BASE_PORT = 40000;
export const DEFAULT_STORAGE_CLASS = 2;
export const DEFAULT_SHUCKLE_URL = `http://localhost:${SHUCKLE_HTTP_PORT}`;
