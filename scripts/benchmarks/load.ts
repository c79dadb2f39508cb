// Load generator and server for scripts/bench; runs inside lab namespaces, prints one JSON line.
//   server <connectPort>                           accept-and-close server
//   rate <host> <port> <concurrency> <ms> <max> [pid...]
//                                                   new connections per second, and the CPU time
//                                                   of the whole machine and of the given
//                                                   processes (the agents) during the run
//   sequential <host> <port> <count> [socket...]    connect latency, one at a time; with agent
//                                                   status sockets, their peer caches are flushed
//                                                   before every connect (first-contact cost)
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect, createServer, type Socket } from 'node:net';

const [mode, ...args] = process.argv.slice(2);

function emit(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

function openAndClose(host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    let connectedAfter = 0;
    const socket: Socket = connect({ host, port });
    socket.setNoDelay(true);
    socket.once('connect', () => {
      connectedAfter = Number(process.hrtime.bigint() - started) / 1000;
      socket.end();
    });
    socket.once('error', reject);
    socket.once('close', () => {
      resolve(connectedAfter);
    });
    socket.resume();
  });
}

// /proc reports CPU time in USER_HZ ticks, which Linux fixes at 100 a second for user space.
const TICK_MICROSECONDS = 10_000;

/** CPU time the machine spent busy (user, nice, system, irq, softirq; not idle, iowait or steal). */
function machineBusyTicks(): number {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0] = fields;
  return user + nice + system + irq + softirq;
}

/** User and system CPU time of one process, all its threads. */
function processTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name, which is in parentheses and may contain spaces.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

async function rate(host: string, port: number, concurrency: number, ms: number, max: number, pids: number[]): Promise<void> {
  let completed = 0;
  let failed = 0;
  const machineBefore = machineBusyTicks();
  const processesBefore = pids.reduce((sum, pid) => sum + processTicks(pid), 0);
  const started = Date.now();
  const deadline = started + ms;
  const worker = async (): Promise<void> => {
    while (Date.now() < deadline && completed + failed < max) {
      try {
        await openAndClose(host, port);
        completed += 1;
      } catch {
        failed += 1;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const seconds = (Date.now() - started) / 1000;
  const machineMicroseconds = (machineBusyTicks() - machineBefore) * TICK_MICROSECONDS;
  const processMicroseconds = (pids.reduce((sum, pid) => sum + processTicks(pid), 0) - processesBefore) * TICK_MICROSECONDS;
  emit({ completed, failed, seconds, perSecond: completed / seconds, machineMicroseconds, processMicroseconds });
}

function flush(socketPath: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path: '/caches/flush', method: 'POST' }, (response) => {
      response.resume();
      response.on('end', resolve);
    });
    req.on('error', reject);
    req.end();
  });
}

async function sequential(host: string, port: number, count: number, flushSockets: string[]): Promise<void> {
  const samples: number[] = [];
  const deadline = Date.now() + 30_000;
  for (let i = 0; i < count && Date.now() < deadline; i++) {
    for (const socket of flushSockets) await flush(socket);
    samples.push(await openAndClose(host, port));
  }
  samples.sort((a, b) => a - b);
  emit({ count: samples.length, p50: percentile(samples, 50), p99: percentile(samples, 99) });
}

switch (mode) {
  case 'server': {
    createServer((socket) => {
      socket.on('error', () => undefined);
      socket.end();
      socket.resume();
    }).listen(Number(args[0]), '0.0.0.0', 1024, () => {
      emit({ listening: true });
    });
    break;
  }
  case 'rate':
    await rate(args[0]!, Number(args[1]), Number(args[2]), Number(args[3]), Number(args[4]), args.slice(5).map(Number));
    break;
  case 'sequential':
    await sequential(args[0]!, Number(args[1]), Number(args[2]), args.slice(3));
    break;
  default:
    process.stderr.write(`unknown mode ${mode ?? ''}\n`);
    process.exit(2);
}
