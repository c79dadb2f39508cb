// Plays a scanner or an attacker with a raw socket (the `raw-socket` package), inside whatever
// namespace it runs in. Prints one JSON line when done.
//   send <target> <hex>...            sends complete IPv4 packets as they are (IP_HDRINCL)
//   syn-scan <source> <target> <port>...  sends one plain SYN to each port
//   syn-flood <source> <target> <port> <count>  sends <count> plain SYNs (count at most 100,000)
import { createRequire } from 'node:module';
import { ipv4HeaderChecksum, tcpChecksum, writeUint16 } from '../../agent/src/datapath/checksum.ts';

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

function synPacket(source: string, target: string, port: number, sourcePort: number): Buffer {
  const packet = Buffer.alloc(40);
  packet[0] = 0x45;
  packet.writeUInt16BE(40, 2);
  packet.writeUInt16BE(0x4000, 6);
  packet[8] = 64;
  packet[9] = 6;
  Buffer.from(source.split('.').map(Number)).copy(packet, 12);
  Buffer.from(target.split('.').map(Number)).copy(packet, 16);
  packet.writeUInt16BE(sourcePort, 20);
  packet.writeUInt16BE(port, 22);
  packet.writeUInt32BE((Math.random() * 0xffffffff) >>> 0, 24);
  packet[32] = 0x50;
  packet[33] = 0x02;
  packet.writeUInt16BE(64240, 34);
  writeUint16(packet, 10, ipv4HeaderChecksum(packet, 0, 20));
  writeUint16(packet, 36, tcpChecksum(packet, 4, 12, 20, 20));
  return packet;
}

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
  const packets = ports.map((port, i) => synPacket(source!, target!, Number(port), 40000 + i));
  const sent = await sendAll(target!, packets);
  process.stdout.write(`${JSON.stringify({ sent })}\n`);
} else if (mode === 'syn-flood') {
  const [source, target, port, countText] = args;
  const count = Math.min(Number(countText), 100_000);
  const packets = Array.from({ length: count }, (_, i) => synPacket(source!, target!, Number(port), 1024 + (i % 64000)));
  const started = performance.now();
  const sent = await sendAll(target!, packets);
  process.stdout.write(`${JSON.stringify({ sent, perSecond: Math.round(sent / ((performance.now() - started) / 1000)) })}\n`);
} else {
  process.stderr.write('usage: raw-probe send <target> <hex>... | syn-scan <source> <target> <port>... | syn-flood <source> <target> <port> <count>\n');
  process.exit(2);
}
