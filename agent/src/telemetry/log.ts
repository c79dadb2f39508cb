// Structured JSON-line logs. Every module takes a child logger so each line names its component.
// Lines are written off the event loop, and what waits to be written is bounded: a flood that
// outruns the reader of stdout (journald, a container runtime) costs counted lines, not memory.
import { pino, type Logger } from 'pino';

export type { Logger };

/** What may wait in memory for stdout; past it a line is dropped and counted. */
export const LOG_MAX_PENDING_BYTES = 8 * 1024 * 1024;

/** The part of pino's asynchronous destination (sonic-boom) the bound needs. */
export interface AsyncDestination {
  write(data: string): boolean;
  on(event: 'write', listener: (bytes: number) => void): unknown;
  flushSync(): void;
}

/**
 * A destination that counts the bytes handed on and not yet written (sonic-boom reports each
 * completed write) and drops a line that would take them past `maxPendingBytes`.
 */
export class BoundedLogStream {
  pendingBytes = 0;
  droppedLines = 0;

  constructor(
    private readonly destination: AsyncDestination,
    readonly maxPendingBytes: number = LOG_MAX_PENDING_BYTES,
  ) {
    destination.on('write', (bytes) => {
      this.pendingBytes = Math.max(0, this.pendingBytes - bytes);
    });
  }

  write(line: string): boolean {
    const bytes = Buffer.byteLength(line);
    if (this.pendingBytes + bytes > this.maxPendingBytes) {
      this.droppedLines += 1;
      return false;
    }
    this.pendingBytes += bytes;
    return this.destination.write(line);
  }

  /** Writes what is pending before the process exits; what a full pipe refuses is lost. */
  flushSync(): void {
    try {
      this.destination.flushSync();
    } catch {
      // EAGAIN on a pipe nobody reads: at most maxPendingBytes are lost, as documented.
    }
  }
}

export interface AgentLog {
  log: Logger;
  stream: BoundedLogStream;
}

export function createAgentLog(level: string = process.env.SYNPASS_LOG_LEVEL ?? 'info', destination?: AsyncDestination): AgentLog {
  const stream = new BoundedLogStream(destination ?? pino.destination({ dest: 1, sync: false }));
  if (destination === undefined) process.once('exit', () => { stream.flushSync(); });
  const log = pino(
    {
      level,
      base: { service: 'synpass', pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    stream,
  );
  return { log, stream };
}

export function createLogger(level?: string): Logger {
  return createAgentLog(level).log;
}
