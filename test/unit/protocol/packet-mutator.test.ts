// The live fuzzer's mutator (scripts/lib/packet-mutator.ts): it must take real handshake
// packets apart and back together unchanged, reach every parse outcome, change each field the
// kernel fast path's MAC binds, and repeat itself from a seed.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ParsedPacket, parsePacket } from '../../../agent/src/datapath/packet.ts';
import { attachToken } from '../../../agent/src/datapath/rewrite.ts';
import { IPV4_SYN, IPV6_HOP_BY_HOP_SYN, IPV6_SYN, withValidChecksums } from '../../../scripts/lib/fixtures.ts';
import { FAST_SYN_OPTION } from '../../../agent/src/kernel/layouts.ts';
import { mutatedPackets, reassembled } from '../../../scripts/lib/packet-mutator.ts';
import { ipv4Segment, tcpOptionOffset } from '../../../scripts/lib/packets.ts';

function withToken(base: Uint8Array, body: Uint8Array): Uint8Array {
  const packet = new ParsedPacket();
  assert.ok(parsePacket(base, 0, base.length, packet));
  const out = new Uint8Array(2048);
  return out.slice(0, attachToken(packet, body, body.length, out, 1500));
}

const body = Uint8Array.from(Array.from({ length: 180 }, (_, i) => (i * 37) & 0xff));
const BASES = [withToken(withValidChecksums(IPV4_SYN), body), withToken(withValidChecksums(IPV6_SYN), body), withValidChecksums(IPV6_HOP_BY_HOP_SYN)];

describe('packet mutator', () => {
  it('reassembles a packet it did not change byte for byte', () => {
    for (const base of BASES) assert.deepEqual(Buffer.from(reassembled(base)), Buffer.from(base));
  });

  it('reaches every parse outcome a fuzzer should, and repeats itself from a seed', () => {
    const statuses = new Map<string, number>();
    const packet = new ParsedPacket();
    const first: string[] = [];
    let i = 0;
    for (const mutated of mutatedPackets(BASES, 7, 6_000)) {
      parsePacket(mutated, 0, mutated.length, packet);
      statuses.set(packet.status, (statuses.get(packet.status) ?? 0) + 1);
      if (i++ < 50) first.push(Buffer.from(mutated).toString('hex'));
    }
    for (const status of ['ok', 'truncated', 'bad-ip-length', 'bad-tcp-header', 'bad-tcp-options', 'bad-token-area', 'ip-fragment', 'not-tcp']) {
      assert.ok((statuses.get(status) ?? 0) > 0, `${status}: ${JSON.stringify(Object.fromEntries(statuses))}`);
    }
    const again = [...mutatedPackets(BASES, 7, 50)].map((m) => Buffer.from(m).toString('hex'));
    assert.deepEqual(again, first);
  });

  it('changes each field the MAC of a fast SYN binds: the ISN, the time, the fast id, the MAC itself', () => {
    const { kind, length, exid } = FAST_SYN_OPTION;
    const option = Uint8Array.from([kind, length, exid >> 8, exid & 0xff, 0, 0, 0, 7, 0x67, 0x50, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
    const base = ipv4Segment({ source: '10.9.0.1', target: '10.9.0.2', sourcePort: 40_000, port: 8080, sequence: 1000, options: option });
    const changed = new Set<string>();
    const packet = new ParsedPacket();
    for (const mutated of mutatedPackets([base], 11, 4_000)) {
      if (!parsePacket(mutated, 0, mutated.length, packet) || mutated.length !== base.length) continue;
      const at = tcpOptionOffset(mutated, kind, length, exid);
      if (at !== 40) continue;
      const bytes = Buffer.from(mutated);
      // Only what the mutation changed, checksums aside.
      const differs = (from: number, to: number) => !bytes.subarray(from, to).equals(Buffer.from(base).subarray(from, to));
      const fields = { isn: differs(24, 28), id: differs(at + 4, at + 8), time: differs(at + 8, at + 12), mac: differs(at + 12, at + 20) };
      const only = Object.entries(fields).filter(([, d]) => d);
      if (only.length === 1 && !differs(0, 10) && !differs(12, 24) && !differs(28, 36) && !differs(38, at + 4)) changed.add(only[0]![0]);
    }
    assert.deepEqual([...changed].sort(), ['id', 'isn', 'mac', 'time']);
  });
});
