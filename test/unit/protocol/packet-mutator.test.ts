// The live fuzzer's mutator (scripts/lib/packet-mutator.ts): it must take real handshake
// packets apart and back together unchanged, reach every parse outcome, and repeat itself
// from a seed.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ParsedPacket, parsePacket } from '../../../agent/src/datapath/packet.ts';
import { attachToken } from '../../../agent/src/datapath/rewrite.ts';
import { IPV4_SYN, IPV6_HOP_BY_HOP_SYN, IPV6_SYN, withValidChecksums } from '../../../scripts/lib/fixtures.ts';
import { mutatedPackets, reassembled } from '../../../scripts/lib/packet-mutator.ts';

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
});
