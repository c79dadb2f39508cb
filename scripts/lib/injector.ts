// Sends packets at the link layer (libpcap through the `cap` package) from whatever namespace it
// runs in: IPv4 and IPv6 with any headers, as fast as one process can or at a set rate, never
// through the sender's own IP stack. Bounded in count and time. Prints {"sending":true} when it
// starts and one JSON line of counts when done.
//   replay <device> <dstMac> <file> <perSecond|max> <seconds> [count]
//                        cycles the packets of <file> (one hex IP packet per line)
//   fuzz <device> <dstMac> <file> <count> <perSecond|max> <seed>
//                        <count> structure-aware mutations (packet-mutator.ts) of those packets
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { setTimeout as sleep } from 'node:timers/promises';
import { mutatedPackets } from './packet-mutator.ts';
import { ethernetFrame } from './packets.ts';

interface CapInstance {
  open(device: string, filter: string, bufferSize: number, buffer: Buffer): string;
  send(buffer: Buffer, length?: number): void;
  close(): void;
}
const { Cap } = createRequire(import.meta.url)('cap') as { Cap: new () => CapInstance };

/** Hard bounds of any run, whatever the arguments say. */
const MAX_SECONDS = 900;
const MAX_PACKETS = 50_000_000;

interface Run {
  device: string;
  frames: Iterator<Buffer>;
  perSecond: number;
  seconds: number;
  count: number;
}

async function send(run: Run): Promise<void> {
  const cap = new Cap();
  // Opened to send; the filter matches nothing, so nothing is captured.
  cap.open(run.device, 'less 1', 1 << 20, Buffer.alloc(65_535));
  process.stdout.write(`${JSON.stringify({ sending: true })}\n`);
  const limit = Math.min(run.count, MAX_PACKETS);
  const seconds = Math.min(run.seconds, MAX_SECONDS);
  const started = performance.now();
  let sent = 0;
  let failed = 0;
  let exhausted = false;
  while (!exhausted && sent + failed < limit) {
    const elapsed = (performance.now() - started) / 1000;
    if (elapsed >= seconds) break;
    const due = Number.isFinite(run.perSecond) ? Math.min(limit, Math.floor(elapsed * run.perSecond) + 1) : Math.min(limit, sent + failed + 4096);
    while (sent + failed < due) {
      const next = run.frames.next();
      if (next.done === true) {
        exhausted = true;
        break;
      }
      try {
        cap.send(next.value);
        sent += 1;
      } catch {
        failed += 1;
      }
    }
    // Yield so that a paced run sleeps and a flat-out one still answers signals.
    await sleep(Number.isFinite(run.perSecond) ? 1 : 0);
  }
  cap.close();
  const took = (performance.now() - started) / 1000;
  process.stdout.write(`${JSON.stringify({ sent, failed, seconds: took, perSecond: Math.round(sent / took) })}\n`);
}

function packetsOf(file: string): Uint8Array[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => Uint8Array.from(Buffer.from(line.trim(), 'hex')));
}

function* framed(packets: Iterable<Uint8Array>, destinationMac: string, sourceMac: string): Generator<Buffer> {
  for (const packet of packets) yield ethernetFrame(destinationMac, sourceMac, packet);
}

function* cycled<T>(items: readonly T[]): Generator<T> {
  for (let i = 0; ; i++) yield items[i % items.length]!;
}

const rate = (text: string | undefined): number => (text === 'max' ? Number.POSITIVE_INFINITY : Number(text));
const [mode, device, destinationMac, file, ...rest] = process.argv.slice(2);
if ((mode !== 'replay' && mode !== 'fuzz') || device === undefined || destinationMac === undefined || file === undefined) {
  process.stderr.write('usage: injector replay <device> <dstMac> <file> <perSecond|max> <seconds> [count] | fuzz <device> <dstMac> <file> <count> <perSecond|max> <seed>\n');
  process.exit(2);
}
const sourceMac = readFileSync(`/sys/class/net/${device}/address`, 'utf8').trim();
const packets = packetsOf(file);
if (mode === 'replay') {
  const frames = packets.map((packet) => ethernetFrame(destinationMac, sourceMac, packet));
  await send({ device, frames: cycled(frames), perSecond: rate(rest[0]), seconds: Number(rest[1]), count: rest[2] === undefined ? MAX_PACKETS : Number(rest[2]) });
} else {
  const count = Number(rest[0]);
  await send({ device, frames: framed(mutatedPackets(packets, Number(rest[2]), count), destinationMac, sourceMac), perSecond: rate(rest[1]), seconds: MAX_SECONDS, count });
}
