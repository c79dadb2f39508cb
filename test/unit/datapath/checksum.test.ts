import { it } from 'node:test';
import assert from 'node:assert/strict';
import { finishChecksum, ipv4HeaderChecksum, sumWords } from '../../../agent/src/datapath/checksum.ts';
import { IPV4_ACK, IPV4_SYN, IPV4_SYN_ACK } from '../../../scripts/lib/fixtures.ts';

it('IPv4 header checksums match what Linux put on the wire', () => {
  assert.equal(ipv4HeaderChecksum(IPV4_SYN, 0, 20), 0x7065);
  assert.equal(ipv4HeaderChecksum(IPV4_SYN_ACK, 0, 20), 0x1b10);
  assert.equal(ipv4HeaderChecksum(IPV4_ACK, 0, 20), 0x706c);
});

it('RFC 1071 example: words 0001 f203 f4f5 f6f7 sum to ddf2, checksum 220d', () => {
  const words = Uint8Array.from([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]);
  assert.equal(finishChecksum(sumWords(words, 0, words.length, 0)), 0x220d);
});

it('pads an odd trailing byte with zero', () => {
  const odd = Uint8Array.from([0x12, 0x34, 0x56]);
  assert.equal(sumWords(odd, 0, 3, 0), 0x1234 + 0x5600);
});
