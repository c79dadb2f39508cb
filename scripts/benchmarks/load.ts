// Load generator and server for scripts/bench; runs inside lab namespaces, prints one JSON line.
//   server <connectPort>                           accept-and-close server
//   rate <host> <port> <concurrency> <ms> <max> [pid...]
//                                                   new connections per second, connect p50/p99
//                                                   (µs; a connect fails after 5 s), and the CPU time
//                                                   of the whole machine and of the given
//                                                   processes (the agents) during the run
//   sequential <host> <port> <count> [socket...]    connect latency, one at a time (failed: timed
//                                                   out or refused); with agent
//                                                   status sockets, their peer caches are flushed
//                                                   before every connect (first-contact cost)
//   paired-rate <host> <bypassHost> <bypassLocal> <port> <concurrency> <sliceMs> <slices>
//                                                   the rate through the agents and through a
//                                                   bypass (addresses the agents exclude),
//                                                   alternating every slice
//   paired-sequential <host> <bypassHost> <bypassLocal> <port> <count> [socket...]
//                                                   connect latency through the agents and
//                                                   through the bypass, alternating every 10
//                                                   connects (with sockets: flushed before each
//                                                   connect through the agents)
import { readFileSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { flushCaches } from '../../agent/src/telemetry/status-client.ts';
import { processTicks, TICKS_PER_SECOND } from '../lib/proc.ts';

const [mode, ...args] = process.argv.slice(2);

function emit(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

/** Where a connection goes and, for the bypass, the local address it leaves from. */
interface Path {
  host: string;
  port: number;
  localAddress?: string;
}

/** A connect that has not completed by then failed (a dropped SYN is retried after 1 s and 3 s). */
const CONNECT_TIMEOUT_MS = 5_000;

function openAndClose({ host, port, localAddress }: Path): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    let connectedAfter = 0;
    const socket: Socket = connect(localAddress === undefined ? { host, port } : { host, port, localAddress });
    socket.setNoDelay(true);
    const timer = setTimeout(() => socket.destroy(new Error('connect timed out')), CONNECT_TIMEOUT_MS);
    socket.once('connect', () => {
      clearTimeout(timer);
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

const TICK_MICROSECONDS = 1_000_000 / TICKS_PER_SECOND;

/** CPU time the machine spent busy (user, nice, system, irq, softirq; not idle, iowait or steal). */
function machineBusyTicks(): number {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0] = fields;
  return user + nice + system + irq + softirq;
}


/** `concurrency` connections at a time to `path` for `ms` (at most `max`), with each connect's latency (µs). */
async function burst(path: Path, concurrency: number, ms: number, max: number): Promise<{ completed: number; failed: number; seconds: number; latencies: number[] }> {
  let completed = 0;
  let failed = 0;
  const latencies: number[] = [];
  const started = Date.now();
  const deadline = started + ms;
  const worker = async (): Promise<void> => {
    while (Date.now() < deadline && completed + failed < max) {
      try {
        latencies.push(await openAndClose(path));
        completed += 1;
      } catch {
        failed += 1;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { completed, failed, seconds: (Date.now() - started) / 1000, latencies };
}

async function rate(path: Path, concurrency: number, ms: number, max: number, pids: number[]): Promise<void> {
  const machineBefore = machineBusyTicks();
  const processesBefore = pids.reduce((sum, pid) => sum + processTicks(pid), 0);
  const { completed, failed, seconds, latencies } = await burst(path, concurrency, ms, max);
  const machineMicroseconds = (machineBusyTicks() - machineBefore) * TICK_MICROSECONDS;
  const processMicroseconds = (pids.reduce((sum, pid) => sum + processTicks(pid), 0) - processesBefore) * TICK_MICROSECONDS;
  latencies.sort((a, b) => a - b);
  emit({ completed, failed, seconds, perSecond: completed / seconds, p50: percentile(latencies, 50), p99: percentile(latencies, 99), machineMicroseconds, processMicroseconds });
}

async function sequential(path: Path, count: number, flushSockets: string[]): Promise<void> {
  const samples: number[] = [];
  let failed = 0;
  const deadline = Date.now() + 30_000;
  for (let i = 0; i < count && Date.now() < deadline; i++) {
    for (const socket of flushSockets) await flushCaches(socket);
    try {
      samples.push(await openAndClose(path));
    } catch {
      failed += 1;
    }
  }
  samples.sort((a, b) => a - b);
  emit({ count: samples.length, failed, p50: percentile(samples, 50), p99: percentile(samples, 99) });
}

// The paired modes cancel the VM's drift, which is larger than the agents' cost: both paths are
// measured in the same seconds, in alternating order.
async function pairedRate(agents: Path, bypass: Path, concurrency: number, sliceMs: number, slices: number): Promise<void> {
  const totals = { agents: { completed: 0, seconds: 0 }, bypass: { completed: 0, seconds: 0 } };
  let failed = 0;
  for (let slice = 0; slice < slices; slice++) {
    const through = slice % 2 === 0 ? 'agents' : 'bypass';
    const result = await burst(through === 'agents' ? agents : bypass, concurrency, sliceMs, Number.POSITIVE_INFINITY);
    totals[through].completed += result.completed;
    totals[through].seconds += result.seconds;
    failed += result.failed;
  }
  emit({
    failed,
    perSecond: totals.agents.completed / totals.agents.seconds,
    bypassPerSecond: totals.bypass.completed / totals.bypass.seconds,
  });
}

// Connects alternate between the paths in blocks: short enough that drift cancels, long enough
// that the agents' code stays as warm as in back-to-back connects (alternating every connect put
// a bypass connect between any two of theirs and measured them colder).
const PAIRED_BLOCK = 10;

async function pairedSequential(agents: Path, bypass: Path, count: number, flushSockets: string[]): Promise<void> {
  const through: number[] = [];
  const around: number[] = [];
  const deadline = Date.now() + 60_000;
  for (let block = 0; through.length < count && Date.now() < deadline; block++) {
    // Alternating order: neither path always runs first.
    for (const path of block % 2 === 0 ? [agents, bypass] : [bypass, agents]) {
      for (let i = 0; i < PAIRED_BLOCK; i++) {
        if (path === agents) for (const socket of flushSockets) await flushCaches(socket);
        (path === agents ? through : around).push(await openAndClose(path));
      }
    }
  }
  through.sort((a, b) => a - b);
  around.sort((a, b) => a - b);
  emit({
    count: through.length,
    p50: percentile(through, 50),
    p99: percentile(through, 99),
    bypassP50: percentile(around, 50),
    bypassP99: percentile(around, 99),
  });
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
    await rate({ host: args[0]!, port: Number(args[1]) }, Number(args[2]), Number(args[3]), Number(args[4]), args.slice(5).map(Number));
    break;
  case 'sequential':
    await sequential({ host: args[0]!, port: Number(args[1]) }, Number(args[2]), args.slice(3));
    break;
  case 'paired-rate': {
    const port = Number(args[3]);
    await pairedRate({ host: args[0]!, port }, { host: args[1]!, port, localAddress: args[2]! }, Number(args[4]), Number(args[5]), Number(args[6]));
    break;
  }
  case 'paired-sequential': {
    const port = Number(args[3]);
    await pairedSequential({ host: args[0]!, port }, { host: args[1]!, port, localAddress: args[2]! }, Number(args[4]), args.slice(5));
    break;
  }
  default:
    process.stderr.write(`unknown mode ${mode ?? ''}\n`);
    process.exit(2);
}
