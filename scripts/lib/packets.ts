// Packets an attacker or a load test builds: a plain SYN, a captured packet moved to another
// source address, checksums made right again, and the Ethernet frame a link-layer sender needs.
import { ipv4HeaderChecksum, tcpChecksum, writeUint16 } from '../../agent/src/datapath/checksum.ts';
import { ParsedPacket, parsePacket } from '../../agent/src/datapath/packet.ts';

/** An address (IPv4 dotted or IPv6 text) as its bytes. */
export function addressBytes(address: string): Uint8Array {
  if (!address.includes(':')) return Uint8Array.from(address.split('.').map(Number));
  const [head, tail] = address.split('::') as [string, string | undefined];
  const groups = (text: string | undefined) => (text === undefined || text === '' ? [] : text.split(':'));
  const headGroups = groups(head);
  const tailGroups = groups(tail);
  const all = [...headGroups, ...Array.from({ length: 8 - headGroups.length - tailGroups.length }, () => '0'), ...tailGroups];
  const out = new Uint8Array(16);
  all.forEach((group, i) => {
    const value = Number.parseInt(group, 16);
    out[2 * i] = value >> 8;
    out[2 * i + 1] = value & 0xff;
  });
  return out;
}

export interface SegmentFields {
  source: string;
  target: string;
  sourcePort: number;
  port: number;
  sequence: number;
  acknowledgment?: number;
  /** TCP flags byte (default SYN). */
  flags?: number;
  /** TCP options, padded by the caller to a multiple of 4 bytes. */
  options?: Uint8Array;
}

/** An IPv4 TCP segment without payload, checksums right. */
export function ipv4Segment(fields: SegmentFields): Uint8Array {
  const options = fields.options ?? new Uint8Array(0);
  if (options.length % 4 !== 0 || options.length > 40) throw new RangeError('TCP options: a multiple of 4 bytes, at most 40');
  const length = 40 + options.length;
  const packet = Buffer.alloc(length);
  packet[0] = 0x45;
  packet.writeUInt16BE(length, 2);
  packet.writeUInt16BE(0x4000, 6);
  packet[8] = 64;
  packet[9] = 6;
  packet.set(addressBytes(fields.source), 12);
  packet.set(addressBytes(fields.target), 16);
  packet.writeUInt16BE(fields.sourcePort, 20);
  packet.writeUInt16BE(fields.port, 22);
  packet.writeUInt32BE(fields.sequence >>> 0, 24);
  packet.writeUInt32BE((fields.acknowledgment ?? 0) >>> 0, 28);
  packet[32] = (5 + options.length / 4) << 4;
  packet[33] = fields.flags ?? 0x02;
  packet.writeUInt16BE(64240, 34);
  packet.set(options, 40);
  return fixChecksums(packet, 4, 20);
}

/** A 40-byte IPv4 SYN without options or token, as a port scanner sends it. */
export function plainSyn(source: string, target: string, port: number, sourcePort: number, sequence: number): Uint8Array {
  return ipv4Segment({ source, target, port, sourcePort, sequence });
}

/**
 * Where the TCP option of `kind` and `length` starts in a well-formed packet (for kind 253/254,
 * also matching the 2-byte ExID), or -1.
 */
export function tcpOptionOffset(bytes: Uint8Array, kind: number, length: number, exid?: number): number {
  const packet = parsed(bytes);
  return optionOffset(bytes, packet.tcpOffset + 20, packet.tcpOffset + packet.tcpHeaderLength, kind, length, exid);
}

/** The same walk over the option bytes between `start` and `end`, as the kernel reads them. */
export function optionOffset(bytes: Uint8Array, start: number, end: number, kind: number, length: number, exid?: number): number {
  for (let at = start; at < end; ) {
    const current = bytes[at]!;
    if (current === 0) return -1;
    if (current === 1) {
      at += 1;
      continue;
    }
    if (at + 1 >= end) return -1;
    const size = bytes[at + 1]!;
    if (size < 2) return -1;
    if (current === kind && size === length && at + size <= end && (exid === undefined || ((bytes[at + 2]! << 8) | bytes[at + 3]!) === exid)) return at;
    at += size;
  }
  return -1;
}

/** The IP version and TCP header offset of a well-formed packet, for fixChecksums after an edit. */
export function layout(bytes: Uint8Array): { ipVersion: 4 | 6; tcpOffset: number } {
  const packet = parsed(bytes);
  return { ipVersion: packet.ipVersion, tcpOffset: packet.tcpOffset };
}

/**
 * Sets the IPv4 header checksum (when `ipVersion` is 4) and the TCP checksum of a packet whose
 * TCP header starts at `tcpOffset` and runs to the end of the bytes, parseable or not.
 */
export function fixChecksums(packet: Uint8Array, ipVersion: 4 | 6, tcpOffset: number): Uint8Array {
  if (ipVersion === 4) {
    const headerLength = Math.min((packet[0]! & 0x0f) * 4, tcpOffset);
    if (headerLength >= 20) {
      writeUint16(packet, 10, 0);
      writeUint16(packet, 10, ipv4HeaderChecksum(packet, 0, headerLength));
    }
  }
  if (packet.length >= tcpOffset + 18) {
    writeUint16(packet, tcpOffset + 16, 0);
    writeUint16(packet, tcpOffset + 16, tcpChecksum(packet, ipVersion, ipVersion === 4 ? 12 : 8, tcpOffset, packet.length - tcpOffset));
  }
  return packet;
}

function parsed(bytes: Uint8Array): ParsedPacket {
  const packet = new ParsedPacket();
  if (!parsePacket(bytes, 0, bytes.length, packet)) throw new Error(`packet does not parse: ${packet.status}`);
  return packet;
}

/** A copy of a well-formed packet sent from `source` instead (same family), checksums right. */
export function fromSource(bytes: Uint8Array, source: string): Uint8Array {
  const out = Uint8Array.from(bytes);
  const packet = parsed(out);
  out.set(addressBytes(source), packet.sourceOffset);
  return fixChecksums(out, packet.ipVersion, packet.tcpOffset);
}

/** The packet in an Ethernet frame from `sourceMac` to `destinationMac` ("aa:bb:..."). */
export function ethernetFrame(destinationMac: string, sourceMac: string, packet: Uint8Array): Buffer {
  const frame = Buffer.alloc(14 + packet.length);
  Buffer.from(destinationMac.replaceAll(':', ''), 'hex').copy(frame, 0);
  Buffer.from(sourceMac.replaceAll(':', ''), 'hex').copy(frame, 6);
  frame.writeUInt16BE((packet[0]! >> 4) === 6 ? 0x86dd : 0x0800, 12);
  frame.set(packet, 14);
  return frame;
}
