// Captures on a device with libpcap (the `cap` package) inside whatever namespace it runs in.
// Prints {"ready":true}, then one JSON line per packet with the IP packet as hex, until it has
// `count` packets or `ms` passed, or stdin closes.
import { createRequire } from 'node:module';

interface CapInstance {
  open(device: string, filter: string, bufferSize: number, buffer: Buffer): string;
  setMinBytes?(bytes: number): void;
  on(event: 'packet', listener: (bytes: number, truncated: boolean) => void): void;
  close(): void;
}
const { Cap } = createRequire(import.meta.url)('cap') as { Cap: new () => CapInstance };

const [device = 'br0', filter = 'tcp', countText = '1000', msText = '10000'] = process.argv.slice(2);
const limit = Number(countText);
const buffer = Buffer.alloc(65_535);
const cap = new Cap();
const linkType = cap.open(device, filter, 10 * 1024 * 1024, buffer);
cap.setMinBytes?.(0);
let seen = 0;

function finish(): void {
  cap.close();
  process.stdout.write(`${JSON.stringify({ done: seen })}\n`);
  process.exit(0);
}

cap.on('packet', (bytes) => {
  // Ethernet: skip the 14-byte header (the lab bridge carries no VLAN tags).
  const offset = linkType === 'ETHERNET' ? 14 : 0;
  process.stdout.write(`${JSON.stringify({ hex: buffer.subarray(offset, bytes).toString('hex') })}\n`);
  seen += 1;
  if (seen >= limit) finish();
});
setTimeout(finish, Number(msText));
process.stdin.on('end', finish);
process.stdin.resume();
process.stdout.write(`${JSON.stringify({ ready: true, linkType })}\n`);
