// Text forms of a parsed packet's addresses, for flow keys and logs (not on the per-packet path
// of released connections: only handshake packets reach here).
import type { ParsedPacket } from './packet.ts';

/** The address of `length` (4 or 16) bytes at `offset` as text: IPv4 dotted, IPv6 8 groups, no compression. */
export function formatAddress(buf: Uint8Array, offset: number, length: number): string {
  if (length === 4) return `${buf[offset]!}.${buf[offset + 1]!}.${buf[offset + 2]!}.${buf[offset + 3]!}`;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((buf[offset + i]! << 8) | buf[offset + i + 1]!).toString(16));
  return groups.join(':');
}

export function sourceAddress(packet: ParsedPacket): string {
  return formatAddress(packet.buf, packet.sourceOffset, packet.addressLength);
}

export function destinationAddress(packet: ParsedPacket): string {
  return formatAddress(packet.buf, packet.sourceOffset + packet.addressLength, packet.addressLength);
}

/** An address as text in the form sourceAddress/destinationAddress produce (IPv6: 8 groups). */
export function canonicalAddress(text: string): string {
  if (!text.includes(':')) return text;
  const [head, tail] = text.split('::') as [string, string | undefined];
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':');
  const zeros = tail === undefined ? [] : Array.from({ length: 8 - headGroups.length - tailGroups.length }, () => '0');
  return [...headGroups, ...zeros, ...tailGroups].map((group) => Number.parseInt(group, 16).toString(16)).join(':');
}
