// Traffic endpoints run inside lab namespaces; each prints JSON lines on stdout.
//   server <port> echo|sink|greet|http [seconds]
//                                    serves for 120 s or the given seconds; sink prints {"received":N,"sha256":H} per connection;
//                                    greet is a sink that first sends "ready\n" (server speaks first)
//   send <host> <port> <bytes> [greeted] sends N random bytes to a sink (after its greeting when
//                                    "greeted"), prints {"sent":N,"sha256":H}
//   echo <host> <port> <text>        one echo round trip, prints {"echoed":text}
//   http <host> <port> [localPort]   GET /, prints {"status":200,"body":...}; from localPort when given
//   hold <host> <port>               keeps one echo connection; each stdin line is echoed back
//   rounds <host> <port> <n> <ms>    n echo round trips on new connections, one every ms (each
//                                    given 3 s); prints {"failed":i,"error":...} per failure, then
//                                    {"ok":N,"failed":M}
//   fetch <url>                      GET, prints {"status":N,"body":...}
import { createHash, randomBytes } from 'node:crypto';
import { createServer as createHttpServer, get } from 'node:http';
import { connect, createServer } from 'node:net';
import { createInterface } from 'node:readline';

function emit(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

function fail(error: Error): never {
  emit({ error: error.message });
  process.exit(1);
}

const [mode, a, b, c] = process.argv.slice(2);
// Bounded like every test process; a server outlives the clients of a whole test file.
const deadline = setTimeout(() => fail(new Error('peer timed out')), mode === 'server' ? Number(c ?? 120) * 1000 : 20_000);
deadline.unref();

switch (mode) {
  case 'server': {
    const port = Number(a);
    if (b === 'http') {
      createHttpServer((req, res) => {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end(`hello from api ${req.url ?? ''}`);
      }).listen(port, '::', () => { emit({ listening: port }); });
      break;
    }
    createServer((socket) => {
      socket.on('error', () => undefined);
      if (b === 'echo') {
        socket.pipe(socket);
        return;
      }
      if (b === 'greet') socket.write('ready\n');
      const hash = createHash('sha256');
      let received = 0;
      socket.on('data', (chunk: Buffer) => {
        received += chunk.length;
        hash.update(chunk);
      });
      socket.on('end', () => {
        emit({ received, sha256: hash.digest('hex') });
        socket.end();
      });
    }).listen(port, '::', () => { emit({ listening: port }); });
    break;
  }
  case 'send': {
    const data = randomBytes(Number(c));
    const greeted = process.argv[6] === 'greeted';
    const socket = connect({ host: a!, port: Number(b) }, () => {
      if (!greeted) socket.end(data);
    });
    socket.on('error', fail);
    socket.once('data', () => {
      if (greeted) socket.end(data);
    });
    socket.on('close', () => {
      emit({ sent: data.length, sha256: createHash('sha256').update(data).digest('hex') });
      process.exit(0);
    });
    socket.resume();
    break;
  }
  case 'echo': {
    const socket = connect({ host: a!, port: Number(b) }, () => socket.write(c!));
    socket.on('error', fail);
    let echoed = '';
    socket.on('data', (chunk: Buffer) => {
      echoed += chunk.toString();
      if (echoed.length >= c!.length) {
        emit({ echoed });
        socket.end();
        process.exit(0);
      }
    });
    break;
  }
  case 'http':
  case 'fetch': {
    const url = mode === 'http' ? `http://${a!.includes(':') ? `[${a!}]` : a!}:${b!}/synpass` : a!;
    get(url, mode === 'http' && c !== undefined ? { localPort: Number(c) } : {}, (res) => {
      let body = '';
      res.on('data', (chunk: Buffer) => (body += chunk.toString()));
      res.on('end', () => {
        emit({ status: res.statusCode, body });
        process.exit(0);
      });
    }).on('error', fail);
    break;
  }
  case 'hold': {
    clearTimeout(deadline);
    const socket = connect({ host: a!, port: Number(b) }, () => { emit({ connected: true, localPort: socket.localPort }); });
    socket.on('error', fail);
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      for (const line of chunk.split('\n').filter(Boolean)) emit({ echoed: line });
    });
    createInterface({ input: process.stdin }).on('line', (line) => socket.write(`${line}\n`));
    process.stdin.on('end', () => socket.end());
    break;
  }
  case 'rounds': {
    clearTimeout(deadline);
    const rounds = Number(c);
    const intervalMs = Number(process.argv[6]);
    const roundTrip = (i: number): Promise<void> =>
      new Promise((resolve, reject) => {
        const socket = connect({ host: a!, port: Number(b) }, () => socket.write(`round ${i}`));
        socket.setTimeout(3000, () => { socket.destroy(new Error('no echo within 3 s')); });
        socket.on('error', reject);
        socket.once('data', () => {
          socket.end();
          resolve();
        });
      });
    void (async () => {
      let ok = 0;
      let failed = 0;
      for (let i = 0; i < rounds; i++) {
        const started = Date.now();
        try {
          await roundTrip(i);
          ok += 1;
        } catch (error) {
          failed += 1;
          emit({ failed: i, error: (error as Error).message, at: new Date().toISOString() });
        }
        await new Promise((resolve) => setTimeout(resolve, Math.max(0, intervalMs - (Date.now() - started))));
      }
      emit({ ok, failed });
      process.exit(0);
    })();
    break;
  }
  default:
    fail(new Error(`unknown mode ${mode ?? ''}`));
}
