import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ParsedPacket, parsePacket, TCP_ACK, TCP_PSH, TCP_SYN } from '../../../agent/src/datapath/packet.ts';
import {
  hex,
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
} from '../../../scripts/lib/fixtures.ts';

interface Expected {
  ipVersion: 4 | 6;
  flags: number;
  sourcePort: number;
  destinationPort: number;
  mss: number;
  windowScale: number;
  sackPermitted: boolean;
  sackBlocks: number;
  timestampValue: number;
  payloadLength: number;
  tcpHeaderLength: number;
}

const wellFormed: [string, Uint8Array, Partial<Expected>][] = [
  ['IPv4 SYN with mss, sackOK, TS, nop, wscale', IPV4_SYN, {
    ipVersion: 4, flags: TCP_SYN, sourcePort: 25750, destinationPort: 7000, mss: 1460, windowScale: 10,
    sackPermitted: true, timestampValue: 2579439519, payloadLength: 0, tcpHeaderLength: 40,
  }],
  ['IPv4 SYN-ACK', IPV4_SYN_ACK, { flags: TCP_SYN | TCP_ACK, sourcePort: 7000, mss: 1460, windowScale: 10, sackPermitted: true }],
  ['IPv4 first ACK with nop, nop, TS', IPV4_ACK, {
    flags: TCP_ACK, mss: -1, windowScale: -1, sackPermitted: false, timestampValue: 2579439519, tcpHeaderLength: 32,
  }],
  ['IPv4 data segment', IPV4_DATA, { flags: TCP_ACK | TCP_PSH, payloadLength: 13 }],
  ['IPv4 ACK with two SACK blocks', IPV4_ACK_SACK, { sackBlocks: 2, tcpHeaderLength: 40 }],
  ['IPv4 SYN with EOL and padding', IPV4_SYN_EOL, { mss: 1460, windowScale: -1, tcpHeaderLength: 28 }],
  ['IPv4 SYN with a full option space', IPV4_SYN_FULL_OPTIONS, { mss: 1460, windowScale: 10, tcpHeaderLength: 60 }],
  ['IPv6 SYN', IPV6_SYN, { ipVersion: 6, flags: TCP_SYN, sourcePort: 48406, mss: 1440, windowScale: 10, sackPermitted: true }],
  ['IPv6 SYN-ACK', IPV6_SYN_ACK, { ipVersion: 6, flags: TCP_SYN | TCP_ACK, mss: 1440 }],
  ['IPv6 ACK', IPV6_ACK, { ipVersion: 6, flags: TCP_ACK, tcpHeaderLength: 32 }],
  ['IPv6 SYN behind a hop-by-hop header', IPV6_HOP_BY_HOP_SYN, { ipVersion: 6, flags: TCP_SYN, mss: 1440 }],
];

describe('parsePacket: well-formed packets', () => {
  for (const [name, bytes, expected] of wellFormed) {
    it(name, () => {
      const packet = new ParsedPacket();
      assert.equal(parsePacket(bytes, 0, bytes.length, packet), true, packet.status);
      for (const [field, value] of Object.entries(expected)) {
        assert.equal(packet[field as keyof Expected], value, field);
      }
      assert.equal(packet.hasMarker, false);
    });
  }

  it('reads a packet at an offset inside a larger buffer and ignores link padding', () => {
    const buf = new Uint8Array(200);
    buf.set(IPV4_SYN, 37);
    const packet = new ParsedPacket();
    assert.equal(parsePacket(buf, 37, IPV4_SYN.length + 6, packet), true);
    assert.equal(packet.length, IPV4_SYN.length);
    assert.equal(packet.tcpOffset, 37 + 20);
  });

  it('records the IPv6 extension header length', () => {
    const packet = new ParsedPacket();
    parsePacket(IPV6_HOP_BY_HOP_SYN, 0, IPV6_HOP_BY_HOP_SYN.length, packet);
    assert.equal(packet.ipHeaderLength, 48);
  });
});

function mutate(bytes: Uint8Array, edits: [number, number][]): Uint8Array {
  const out = Uint8Array.from(bytes);
  for (const [offset, value] of edits) out[offset] = value;
  return out;
}

const malformed: [string, Uint8Array, number, string][] = [
  ['empty input', new Uint8Array(0), 0, 'truncated'],
  ['IPv4 header cut short', IPV4_SYN, 19, 'truncated'],
  ['IPv4 total length beyond the bytes captured', IPV4_SYN, 50, 'truncated'],
  ['IP version 5', mutate(IPV4_SYN, [[0, 0x55]]), 60, 'bad-ip-version'],
  ['IP version 0', mutate(IPV4_SYN, [[0, 0x05]]), 60, 'bad-ip-version'],
  ['IPv4 header length below 20', mutate(IPV4_SYN, [[0, 0x44]]), 60, 'bad-ip-header'],
  ['IPv4 total length below the header', mutate(IPV4_SYN, [[2, 0], [3, 10]]), 60, 'bad-ip-length'],
  ['IPv4 fragment (more fragments)', mutate(IPV4_SYN, [[6, 0x20]]), 60, 'ip-fragment'],
  ['IPv4 fragment (offset)', mutate(IPV4_SYN, [[6, 0x40], [7, 0x10]]), 60, 'ip-fragment'],
  ['UDP', mutate(IPV4_SYN, [[9, 17]]), 60, 'not-tcp'],
  ['TCP data offset below 5', mutate(IPV4_SYN, [[32, 0x40]]), 60, 'bad-tcp-header'],
  ['TCP data offset past the packet', mutate(IPV4_ACK, [[32, 0xf0]]), 52, 'bad-tcp-header'],
  ['TCP header cut by the IP length', mutate(IPV4_SYN, [[3, 30]]), 60, 'bad-tcp-header'],
  ['option length 0', mutate(IPV4_SYN, [[41, 0]]), 60, 'bad-tcp-options'],
  ['option length 1', mutate(IPV4_SYN, [[41, 1]]), 60, 'bad-tcp-options'],
  ['option running past the header', mutate(IPV4_SYN, [[56, 30], [57, 8]]), 60, 'bad-tcp-options'],
  ['MSS with length 5', mutate(IPV4_SYN, [[41, 5]]), 60, 'bad-tcp-options'],
  ['window scale with length 4', mutate(IPV4_SYN, [[58, 4]]), 60, 'bad-tcp-options'],
  ['timestamps with length 8', mutate(IPV4_SYN, [[47, 8]]), 60, 'bad-tcp-options'],
  ['kind without a length byte at the end', mutate(IPV4_SYN, [[56, 1], [57, 1], [58, 1], [59, 30]]), 60, 'bad-tcp-options'],
  ['IPv6 header cut short', IPV6_SYN, 39, 'truncated'],
  ['IPv6 payload length beyond the bytes captured', IPV6_SYN, 70, 'truncated'],
  ['IPv6 fragment header', mutate(IPV6_HOP_BY_HOP_SYN, [[40, 44]]), 88, 'ip-fragment'],
  ['IPv6 extension header running past the packet', mutate(IPV6_HOP_BY_HOP_SYN, [[41, 9]]), 88, 'bad-ip-header'],
  ['IPv6 ICMPv6', mutate(IPV6_SYN, [[6, 58]]), 80, 'not-tcp'],
  ['IPv6 with a 12-byte TCP segment', hex('6000000000 0c 0640' + '00'.repeat(32) + '00'.repeat(12)), 52, 'bad-tcp-header'],
];

describe('parsePacket: malformed packets become a status, never an exception', () => {
  for (const [name, bytes, available, status] of malformed) {
    it(`${name} -> ${status}`, () => {
      const packet = new ParsedPacket();
      assert.equal(parsePacket(bytes, 0, available, packet), false);
      assert.equal(packet.status, status);
    });
  }

  it('rejects an offset/length pair that runs past the buffer', () => {
    const packet = new ParsedPacket();
    assert.equal(parsePacket(IPV4_SYN, 10, IPV4_SYN.length, packet), false);
    assert.equal(packet.status, 'truncated');
  });

  it('survives every truncation and single-byte corruption of every fixture', () => {
    const packet = new ParsedPacket();
    for (const [, bytes] of wellFormed) {
      for (let length = 0; length <= bytes.length; length++) parsePacket(bytes, 0, length, packet);
      for (let i = 0; i < bytes.length; i++) {
        for (const value of [0x00, 0x01, 0x7f, 0xff]) {
          const corrupt = mutate(bytes, [[i, value]]);
          parsePacket(corrupt, 0, corrupt.length, packet);
          assert.ok(typeof packet.status === 'string');
        }
      }
    }
  });
});
