// Internet checksum (RFC 1071) over caller-owned bytes: no allocation, no DataView.

/** Adds the bytes [start, end) as big-endian 16-bit words to `acc`; an odd tail byte is padded. */
export function sumWords(buf: Uint8Array, start: number, end: number, acc: number): number {
  let sum = acc;
  let i = start;
  const evenEnd = end - ((end - start) & 1);
  for (; i < evenEnd; i += 2) sum += (buf[i]! << 8) | buf[i + 1]!;
  if (i < end) sum += buf[i]! << 8;
  return sum;
}

/** Folds a running sum into the one's-complement 16-bit checksum value. */
export function finishChecksum(acc: number): number {
  let sum = acc;
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return ~sum & 0xffff;
}

export function writeUint16(buf: Uint8Array, offset: number, value: number): void {
  buf[offset] = (value >>> 8) & 0xff;
  buf[offset + 1] = value & 0xff;
}

export function writeUint32(buf: Uint8Array, offset: number, value: number): void {
  buf[offset] = (value >>> 24) & 0xff;
  buf[offset + 1] = (value >>> 16) & 0xff;
  buf[offset + 2] = (value >>> 8) & 0xff;
  buf[offset + 3] = value & 0xff;
}

export function readUint16(buf: Uint8Array, offset: number): number {
  return (buf[offset]! << 8) | buf[offset + 1]!;
}

export function readUint32(buf: Uint8Array, offset: number): number {
  return ((buf[offset]! << 24) | (buf[offset + 1]! << 16) | (buf[offset + 2]! << 8) | buf[offset + 3]!) >>> 0;
}

/** IPv4 header checksum (RFC 791 section 3.1) over `headerLength` bytes at `offset`. */
export function ipv4HeaderChecksum(buf: Uint8Array, offset: number, headerLength: number): number {
  const withoutField = sumWords(buf, offset, offset + 10, 0);
  return finishChecksum(sumWords(buf, offset + 12, offset + headerLength, withoutField));
}

/**
 * Full TCP checksum (RFC 9293 section 3.1) of the segment at [tcpOffset, tcpOffset + tcpLength),
 * ignoring whatever the checksum field holds, so a locally generated packet whose checksum is
 * only partial (pseudo-header sum, left for offload) gets a complete one.
 */
export function tcpChecksum(
  buf: Uint8Array,
  ipVersion: 4 | 6,
  sourceOffset: number,
  tcpOffset: number,
  tcpLength: number,
): number {
  const addressBytes = ipVersion === 4 ? 8 : 32; // source and destination are adjacent in both headers
  let acc = sumWords(buf, sourceOffset, sourceOffset + addressBytes, 0);
  acc += 6; // next header / protocol = TCP, upper bytes zero
  acc += (tcpLength >>> 16) + (tcpLength & 0xffff);
  acc = sumWords(buf, tcpOffset, tcpOffset + 16, acc);
  acc = sumWords(buf, tcpOffset + 18, tcpOffset + tcpLength, acc);
  return finishChecksum(acc);
}
