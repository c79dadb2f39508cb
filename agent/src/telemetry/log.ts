// Structured JSON-line logs. Every module takes a child logger so each line names its component.
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level: string = process.env.SYNPASS_LOG_LEVEL ?? 'info'): Logger {
  return pino({
    level,
    base: { service: 'synpass', pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  });
}
