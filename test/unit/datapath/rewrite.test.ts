import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { DatapathError } from '../../../agent/src/datapath/errors.ts';
import { ParsedPacket, parsePacket } from '../../../agent/src/datapath/packet.ts';
import { attachOverhead, attachToken, detachToken } from '../../../agent/src/datapath/rewrite.ts';
import {
  IPV4_ACK,
  IPV4_ACK_SACK,
  IPV4_DATA,
  IPV4_SYN,
  IPV4_SYN_ACK,
  IPV4_SYN_EOL,
  IPV4_SYN_FULL_OPTIONS,
  IPV6_ACK,
  IPV6_HOP_BY_HOP_SYN,
  IPV6_SYN,
  IPV6_SYN_ACK,
  withValidChecksums,
} from '../../../scripts/lib/fixtures.ts';

/** Independent check (RFC 1071): the one's-complement sum over a valid segment is 0xffff. */
function tcpChecksumHolds(packet: Uint8Array): boolean {
  const buf = Buffer.from(packet);
  const v4 = buf[0]! >> 4 === 4;
  const ipHeader = v4 ? (buf[0]! & 0xf) * 4 : packet.length - buf.readUInt16BE(4) + 0;
  const tcpStart = v4 ? ipHeader : 40 + (buf[6] === 0 ? (buf[41]! + 1) * 8 : 0);
  const end = v4 ? buf.readUInt16BE(2) : 40 + buf.readUInt16BE(4);
  const pseudo = Buffer.alloc(v4 ? 12 : 40);
  if (v4) {
    buf.copy(pseudo, 0, 12, 20);
    pseudo[9] = 6;
    pseudo.writeUInt16BE(end - tcpStart, 10);
  } else {
    buf.copy(pseudo, 0, 8, 40);
    pseudo.writeUInt32BE(end - tcpStart, 32);
    pseudo[39] = 6;
  }
  const all = Buffer.concat([pseudo, buf.subarray(tcpStart, end), Buffer.alloc((end - tcpStart) % 2)]);
  let sum = 0;
  for (let i = 0; i < all.length; i += 2) sum += all.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum === 0xffff;
}

function ipv4HeaderHolds(packet: Uint8Array): boolean {
  const buf = Buffer.from(packet);
  let sum = 0;
  for (let i = 0; i < (buf[0]! & 0xf) * 4; i += 2) sum += buf.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum === 0xffff;
}

function parsed(bytes: Uint8Array): ParsedPacket {
  const packet = new ParsedPacket();
  assert.equal(parsePacket(bytes, 0, bytes.length, packet), true, packet.status);
  return packet;
}

const token = new TextEncoder().encode('a token of some 60 bytes, standing in for signed claims....');

const fixtures: [string, Uint8Array][] = [
  ['IPv4 SYN', IPV4_SYN],
  ['IPv4 SYN-ACK', IPV4_SYN_ACK],
  ['IPv4 first ACK', IPV4_ACK],
  ['IPv4 data segment', IPV4_DATA],
  ['IPv4 ACK with SACK', IPV4_ACK_SACK],
  ['IPv4 SYN with EOL', IPV4_SYN_EOL],
  ['IPv6 SYN', IPV6_SYN],
  ['IPv6 SYN-ACK', IPV6_SYN_ACK],
  ['IPv6 ACK', IPV6_ACK],
  ['IPv6 SYN behind hop-by-hop', IPV6_HOP_BY_HOP_SYN],
];

describe('attachToken / detachToken', () => {
  for (const [name, captured] of fixtures) {
    it(`${name}: attach carries marker and token with valid lengths and checksums`, () => {
      // Captured packets hold a partial checksum, as locally generated packets do.
      const original = parsed(captured);
      const out = new Uint8Array(2048);
      const length = attachToken(original, token, token.length, out, 1500);
      assert.equal(length, captured.length + attachOverhead(token.length));
      const attached = out.slice(0, length);
      const result = parsed(attached);
      assert.equal(result.hasMarker, true);
      assert.equal(result.tcpHeaderLength, original.tcpHeaderLength + 4);
      assert.deepEqual(attached.subarray(result.tokenOffset, result.tokenOffset + result.tokenLength), token);
      assert.deepEqual(
        attached.subarray(result.applicationPayloadOffset, result.applicationPayloadOffset + result.applicationPayloadLength),
        captured.subarray(original.payloadOffset, original.payloadOffset + original.payloadLength),
      );
      assert.equal(result.sequence, original.sequence);
      assert.equal(result.mss, original.mss);
      assert.equal(result.timestampValue, original.timestampValue);
      assert.ok(tcpChecksumHolds(attached), 'TCP checksum');
      if (result.ipVersion === 4) assert.ok(ipv4HeaderHolds(attached), 'IPv4 header checksum');
    });

    it(`${name}: detach restores the original byte for byte`, () => {
      const original = withValidChecksums(captured);
      const attachedBuf = new Uint8Array(2048);
      const length = attachToken(parsed(original), token, token.length, attachedBuf, 1500);
      const restoredBuf = new Uint8Array(2048);
      const restoredLength = detachToken(parsed(attachedBuf.slice(0, length)), restoredBuf);
      assert.deepEqual(restoredBuf.slice(0, restoredLength), original);
    });
  }

  it('detach gives a full checksum when the sender had only a partial one', () => {
    const attachedBuf = new Uint8Array(2048);
    const length = attachToken(parsed(IPV4_SYN), token, token.length, attachedBuf, 1500);
    const restoredBuf = new Uint8Array(2048);
    const restoredLength = detachToken(parsed(attachedBuf.slice(0, length)), restoredBuf);
    assert.ok(tcpChecksumHolds(restoredBuf.slice(0, restoredLength)));
    assert.deepEqual(restoredBuf.slice(0, restoredLength), withValidChecksums(IPV4_SYN));
  });

  it('an empty token still round-trips', () => {
    const out = new Uint8Array(2048);
    const length = attachToken(parsed(IPV4_SYN), token, 0, out, 1500);
    const result = parsed(out.slice(0, length));
    assert.equal(result.tokenLength, 0);
    assert.equal(result.hasMarker, true);
  });

  it('refuses a full option space with a typed error', () => {
    assert.throws(
      () => attachToken(parsed(IPV4_SYN_FULL_OPTIONS), token, token.length, new Uint8Array(2048), 1500),
      (error: unknown) => error instanceof DatapathError && error.code === 'option-space',
    );
  });

  it('refuses to exceed the MTU with a typed error, even by one byte', () => {
    const limit = IPV4_SYN.length + attachOverhead(token.length);
    const out = new Uint8Array(2048);
    assert.equal(attachToken(parsed(IPV4_SYN), token, token.length, out, limit), limit);
    assert.throws(
      () => attachToken(parsed(IPV4_SYN), token, token.length, out, limit - 1),
      (error: unknown) => error instanceof DatapathError && error.code === 'mtu',
    );
  });

  it('refuses an output buffer that is too small', () => {
    assert.throws(
      () => attachToken(parsed(IPV4_SYN), token, token.length, new Uint8Array(64), 1500),
      (error: unknown) => error instanceof DatapathError && error.code === 'buffer-too-small',
    );
  });

  it('detach refuses a packet without a marker', () => {
    assert.throws(
      () => detachToken(parsed(IPV4_SYN), new Uint8Array(2048)),
      (error: unknown) => error instanceof DatapathError && error.code === 'no-marker',
    );
  });

  it('a marker whose token area claims more bytes than the payload holds is a parse failure', () => {
    const out = new Uint8Array(2048);
    const length = attachToken(parsed(IPV4_SYN), token, token.length, out, 1500);
    const attached = out.slice(0, length);
    const area = 20 + 44;
    attached[area] = 0xff; // body length high byte
    const packet = new ParsedPacket();
    assert.equal(parsePacket(attached, 0, attached.length, packet), false);
    assert.equal(packet.status, 'bad-token-area');
    // A marker with no payload at all is the same failure.
    const bare = attached.slice(0, area);
    bare[3] = area;
    assert.equal(parsePacket(bare, 0, bare.length, packet), false);
    assert.equal(packet.status, 'bad-token-area');
  });

  it('ignores a kind-253 option with a different ExID', () => {
    const out = new Uint8Array(2048);
    const length = attachToken(parsed(IPV4_SYN), token, token.length, out, 1500);
    const attached = out.slice(0, length);
    attached[60 + 3] = attached[60 + 3]! ^ 0x01; // ExID low byte
    const packet = parsed(attached);
    assert.equal(packet.hasMarker, false);
  });
});
