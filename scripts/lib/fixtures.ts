// Packet fixtures: real packets captured in the namespace lab (Linux 6.18, veth) plus hand-made
// ones for the cases Linux does not send. Checksums of captured packets are partial (offload),
// as the agent sees locally generated packets; `withValidChecksums` completes them.
import { ipv4HeaderChecksum, tcpChecksum, writeUint16 } from '../../agent/src/datapath/checksum.ts';
import { ParsedPacket, parsePacket } from '../../agent/src/datapath/packet.ts';
import { LINUX_HANDSHAKE, LINUX_HANDSHAKE_IPV6 } from '../../agent/src/handshake/rehearsal.ts';

export function hex(text: string): Uint8Array {
  return Uint8Array.from(Buffer.from(text.replace(/\s+/g, ''), 'hex'));
}

/** A captured packet (hex, as the capture probe prints it) parsed; its status says if it did not parse. */
export function parseHex(text: string): ParsedPacket {
  const bytes = hex(text);
  const packet = new ParsedPacket();
  parsePacket(bytes, 0, bytes.length, packet);
  return packet;
}

/** Recomputes the IPv4 header checksum and the full TCP checksum of a well-formed packet. */
export function withValidChecksums(packet: Uint8Array): Uint8Array {
  const out = Uint8Array.from(packet);
  const parsed = new ParsedPacket();
  if (!parsePacket(out, 0, out.length, parsed)) throw new Error(`fixture does not parse: ${parsed.status}`);
  if (parsed.ipVersion === 4) writeUint16(out, 10, ipv4HeaderChecksum(out, 0, parsed.ipHeaderLength));
  const tcpLength = parsed.length - parsed.ipHeaderLength;
  writeUint16(out, parsed.tcpOffset + 16, tcpChecksum(out, parsed.ipVersion, parsed.sourceOffset, parsed.tcpOffset, tcpLength));
  return out;
}

/** Linux SYN: mss 1460, sackOK, TS val 2579439519 ecr 0, nop, wscale 10. */
export const IPV4_SYN = Uint8Array.from(LINUX_HANDSHAKE.syn);

/** Linux SYN-ACK answering IPV4_SYN. */
export const IPV4_SYN_ACK = Uint8Array.from(LINUX_HANDSHAKE.synAck);

/** First ACK: nop, nop, TS. */
export const IPV4_ACK = Uint8Array.from(LINUX_HANDSHAKE.ack);

/** Data segment carrying "hello synpass". */
export const IPV4_DATA = hex(`
  4500 0041 aaac 4000 4006 705e 0ad5 0501 0ad5 0502 6496 1b58 cda4 7bf4 3333 8acb
  8018 003f 1fe0 0000 0101 080a 99bf 1fa0 587c babc 6865 6c6c 6f20 7379 6e70 6173 73`);

/** ACK with nop, nop, SACK of two blocks (hand-made). */
export const IPV4_ACK_SACK = hex(`
  4500 003c 0001 4000 4006 0000 0ad5 0501 0ad5 0502 6496 1b58 cda4 7bf4 3333 8acb
  a010 003f 0000 0000 0101 0512 0000 1000 0000 2000 0000 3000 0000 4000`);

/** SYN with mss then EOL and padding (hand-made). */
export const IPV4_SYN_EOL = hex(`
  4500 0030 0002 4000 4006 0000 0ad5 0501 0ad5 0502 6496 1b58 cda4 7bf3 0000 0000
  7002 faf0 0000 0000 0204 05b4 0000 0000`);

/** SYN whose options fill all 40 bytes (hand-made): mss, sackOK, TS, wscale, 13 NOPs + EOL. */
export const IPV4_SYN_FULL_OPTIONS = hex(`
  4500 0050 0003 4000 4006 0000 0ad5 0501 0ad5 0502 6496 1b58 cda4 7bf3 0000 0000
  f002 faf0 0000 0000 0204 05b4 0402 080a 99bf 1f9f 0000 0000 0303 0a${'01'.repeat(20)}00`);

/** Linux IPv6 SYN: mss 1440, sackOK, TS, nop, wscale 10. */
export const IPV6_SYN = Uint8Array.from(LINUX_HANDSHAKE_IPV6.syn);

export const IPV6_SYN_ACK = Uint8Array.from(LINUX_HANDSHAKE_IPV6.synAck);

export const IPV6_ACK = Uint8Array.from(LINUX_HANDSHAKE_IPV6.ack);

/** IPv6 SYN behind a hop-by-hop header (8 bytes: next=TCP, len 0, PadN). */
export const IPV6_HOP_BY_HOP_SYN = hex(`
  6000 0000 0030 0040 fd53 5350 0000 0005 0000 0000 0000 0001 fd53 5350 0000 0005
  0000 0000 0000 0002 0600 0104 0000 0000 bd16 1b58 b5ad f583 0000 0000 a002 fd20
  0000 0000 0204 05a0 0402 080a 0772 c59e 0000 0000 0103 030a`);
