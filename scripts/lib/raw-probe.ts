// Plays a scanner or an attacker with a raw socket (the `raw-socket` package), inside whatever
// namespace it runs in. Prints one JSON line when done.
//   send <target> <hex>...            sends complete IPv4 packets as they are (IP_HDRINCL)
//   syn-scan <source> <target> <port>...  sends one plain SYN to each port
// Floods go through scripts/lib/injector.ts, at the link layer.
import { createRequire } from 'node:module';
import { plainSyn } from './packets.ts';

interface RawSocket {
  setOption(level: number, option: number, value: number): void;
  send(buffer: Buffer, offset: number, length: number, address: string, before: null, after: (error: Error | null, bytes: number) => void): void;
  close(): void;
}
interface RawModule {
  createSocket(options: { protocol: number }): RawSocket;
  Protocol: { TCP: number };
  SocketLevel: { IPPROTO_IP: number };
  SocketOption: { IP_HDRINCL: number };
}
const raw = createRequire(import.meta.url)('raw-socket') as RawModule;

async function sendAll(target: string, packets: Buffer[]): Promise<number> {
  // raw-socket's handle does not hold the event loop open while a send waits for writability.
  const keepAlive = setInterval(() => undefined, 1_000);
  const socket = raw.createSocket({ protocol: raw.Protocol.TCP });
  socket.setOption(raw.SocketLevel.IPPROTO_IP, raw.SocketOption.IP_HDRINCL, 1);
  let sent = 0;
  for (const packet of packets) {
    await new Promise<void>((resolve, reject) => {
      socket.send(packet, 0, packet.length, target, null, (error) => {
        if (error) reject(error);
        else resolve();
      });
    });
    sent += 1;
  }
  socket.close();
  clearInterval(keepAlive);
  return sent;
}

const [mode, ...args] = process.argv.slice(2);
if (mode === 'send') {
  const [target, ...hexes] = args;
  const sent = await sendAll(target!, hexes.map((hex) => Buffer.from(hex, 'hex')));
  process.stdout.write(`${JSON.stringify({ sent })}\n`);
} else if (mode === 'syn-scan') {
  const [source, target, ...ports] = args;
  const packets = ports.map((port, i) => Buffer.from(plainSyn(source!, target!, Number(port), 40000 + i, (Math.random() * 0xffffffff) >>> 0)));
  const sent = await sendAll(target!, packets);
  process.stdout.write(`${JSON.stringify({ sent })}\n`);
} else {
  process.stderr.write('usage: raw-probe send <target> <hex>... | syn-scan <source> <target> <port>...\n');
  process.exit(2);
}
