// Load generator and server for scripts/bench; runs inside lab namespaces, prints one JSON line.
//   server <connectPort>                           accept-and-close server
//   rate <host> <port> <concurrency> <ms> <max>     new connections per second
//   sequential <host> <port> <count> [socket...]    connect latency, one at a time; with agent
//                                                   status sockets, their peer caches are flushed
//                                                   before every connect (first-contact cost)
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

async function rate(host: string, port: number, concurrency: number, ms: number, max: number): Promise<void> {
  let completed = 0;
  let failed = 0;
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
  emit({ completed, failed, seconds, perSecond: completed / seconds });
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
    await rate(args[0]!, Number(args[1]), Number(args[2]), Number(args[3]), Number(args[4]));
    break;
  case 'sequential':
    await sequential(args[0]!, Number(args[1]), Number(args[2]), args.slice(3));
    break;
  default:
    process.stderr.write(`unknown mode ${mode ?? ''}\n`);
    process.exit(2);
}
