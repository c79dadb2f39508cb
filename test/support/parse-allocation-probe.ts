// Run with a large young generation so no scavenge hides allocations:
//   node --max-semi-space-size=64 --min-semi-space-size=64 --import tsx parse-allocation-probe.ts
// Prints the bytes of heap the parser allocated per packet (JSON).
import { getHeapSpaceStatistics } from 'node:v8';
import { ParsedPacket, parsePacket } from '../../agent/src/datapath/packet.ts';
import { IPV4_DATA, IPV4_SYN, IPV6_HOP_BY_HOP_SYN, IPV6_SYN } from '../../scripts/lib/fixtures.ts';

const packets = [IPV4_SYN, IPV6_SYN, IPV4_DATA, IPV6_HOP_BY_HOP_SYN];
const ring = new Uint8Array(4096);
let offset = 0;
const offsets: number[] = [];
for (const p of packets) {
  ring.set(p, offset);
  offsets.push(offset);
  offset += p.length;
}
const parsed = new ParsedPacket();

function run(rounds: number): number {
  let ok = 0;
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < packets.length; i++) {
      if (parsePacket(ring, offsets[i]!, packets[i]!.length, parsed)) ok++;
    }
  }
  return ok;
}

function youngUsed(): number {
  const space = getHeapSpaceStatistics().find((s) => s.space_name === 'new_space');
  return space?.space_used_size ?? 0;
}

// Warm up so the optimising compiler has finished (on a busy machine it compiles late, and
// unoptimised code boxes the 32-bit sequence numbers); then take the best of three rounds.
run(50_000);
const rounds = 50_000;
let ok = 0;
let best = Number.POSITIVE_INFINITY;
for (let attempt = 0; attempt < 3; attempt++) {
  const before = youngUsed();
  ok = run(rounds);
  const after = youngUsed();
  // A round during which a scavenge ran measures nothing (the young space shrank): skip it.
  if (after >= before) best = Math.min(best, (after - before) / (rounds * packets.length));
}
process.stdout.write(JSON.stringify({ packets: rounds * packets.length, parsed: ok, bytesPerPacket: best }));
