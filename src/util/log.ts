// Minimal leveled logging to stderr; stdout is reserved for command output and readiness lines.
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };
let threshold: LogLevel = (process.env.EGGSFS_LOG as LogLevel) in ORDER ? (process.env.EGGSFS_LOG as LogLevel) : 'info';

export function setLogLevel(level: LogLevel): void {
  threshold = level;
}

export interface Logger {
  debug(msg: string): void;
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
}

export function logger(component: string): Logger {
  const emit = (level: LogLevel, msg: string) => {
    if (ORDER[level] < ORDER[threshold]) return;
    process.stderr.write(`${new Date().toISOString()} ${level.toUpperCase().padEnd(5)} ${component}: ${msg}\n`);
  };
  return {
    debug: (m) => emit('debug', m),
    info: (m) => emit('info', m),
    warn: (m) => emit('warn', m),
    error: (m) => emit('error', m),
  };
}

/** The one line a service prints on stdout when it serves; the runner and tests wait for it. */
export function announceReady(service: string, details: Record<string, unknown>): void {
  process.stdout.write(`ready ${service} ${JSON.stringify(details)}\n`);
}
