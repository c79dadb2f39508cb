// Structured JSON-line logs. Every module takes a child logger so each line names its component.
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level: string = process.env.SYNPASS_LOG_LEVEL ?? 'info'): Logger {
  return pino(
    {
      level,
      base: { service: 'synpass', pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    // Written off the event loop: a line per accepted handshake must not make the packet path
    // wait for a pipe (journald, a container runtime) to take it. Lines that pile up while one
    // write is under way leave together; pino flushes what is left when the process exits.
    pino.destination({ dest: 1, sync: false }),
  );
}
