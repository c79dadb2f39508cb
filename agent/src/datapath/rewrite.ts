// Attach and detach the synpass marker and token area. Both write a new packet into the
// caller's output buffer and recompute every length and checksum, so the result is valid
// whatever state the input checksum was in (locally generated packets arrive with a partial one).
import { ipv4HeaderChecksum, tcpChecksum, writeUint16 } from './checksum.ts';
import { DatapathError } from './errors.ts';
import { MARKER_EXID, MARKER_KIND, MARKER_LENGTH, MAX_TCP_HEADER, TOKEN_AREA_HEADER } from './marker.ts';
import type { ParsedPacket } from './packet.ts';

/** Bytes attach adds for a token body of `tokenLength` bytes. */
export function attachOverhead(tokenLength: number): number {
  return MARKER_LENGTH + TOKEN_AREA_HEADER + tokenLength;
}

/**
 * Writes `packet` with the marker option appended to its options and `token` prepended to its
 * payload into `out` at offset 0; returns the new packet length.
 * @throws DatapathError 'option-space' | 'mtu' | 'ip-length' | 'buffer-too-small'
 */
export function attachToken(
  packet: ParsedPacket,
  token: Uint8Array,
  tokenLength: number,
  out: Uint8Array,
  mtu: number,
): number {
  if (packet.status !== 'ok') throw new DatapathError('not-parsed', 'attach on an unparsed packet');
  const newTcpHeaderLength = packet.tcpHeaderLength + MARKER_LENGTH;
  if (newTcpHeaderLength > MAX_TCP_HEADER) {
    throw new DatapathError('option-space', 'no room for the marker in the TCP option space', {
      optionBytes: packet.tcpHeaderLength - 20,
    });
  }
  const newLength = packet.length + attachOverhead(tokenLength);
  if (newLength > mtu) {
    throw new DatapathError('mtu', 'packet with token exceeds the MTU', { length: newLength, mtu });
  }
  if (newLength > 0xffff + (packet.ipVersion === 6 ? 40 : 0)) {
    throw new DatapathError('ip-length', 'packet with token exceeds the IP length field', { length: newLength });
  }
  if (out.length < newLength) {
    throw new DatapathError('buffer-too-small', 'output buffer too small', { length: newLength });
  }
  const src = packet.buf;
  const optionsEnd = packet.tcpOffset + packet.tcpHeaderLength;
  // IP header(s), TCP header and options as they were.
  out.set(src.subarray(packet.start, optionsEnd), 0);
  let w = optionsEnd - packet.start;
  out[w] = MARKER_KIND;
  out[w + 1] = MARKER_LENGTH;
  writeUint16(out, w + 2, MARKER_EXID);
  w += MARKER_LENGTH;
  writeUint16(out, w, tokenLength);
  w += TOKEN_AREA_HEADER;
  out.set(token.subarray(0, tokenLength), w);
  w += tokenLength;
  out.set(src.subarray(packet.payloadOffset, packet.payloadOffset + packet.payloadLength), w);
  const tcpOffset = packet.tcpOffset - packet.start;
  out[tcpOffset + 12] = ((newTcpHeaderLength / 4) << 4) | (out[tcpOffset + 12]! & 0x0f);
  finishRewrite(out, packet, tcpOffset, newLength);
  return newLength;
}

/**
 * Writes `packet` without its marker and token area into `out` at offset 0; returns the new
 * length. For a packet produced by attachToken from a packet with a valid checksum, the result
 * equals that original byte for byte.
 * @throws DatapathError 'no-marker' | 'buffer-too-small'
 */
export function detachToken(packet: ParsedPacket, out: Uint8Array): number {
  if (packet.status !== 'ok' || packet.markerOffset < 0 || packet.tokenOffset < 0) {
    throw new DatapathError('no-marker', 'detach on a packet without a marker');
  }
  const removed = MARKER_LENGTH + TOKEN_AREA_HEADER + packet.tokenLength;
  const newLength = packet.length - removed;
  if (out.length < newLength) {
    throw new DatapathError('buffer-too-small', 'output buffer too small', { length: newLength });
  }
  const src = packet.buf;
  out.set(src.subarray(packet.start, packet.markerOffset), 0);
  let w = packet.markerOffset - packet.start;
  const appStart = packet.applicationPayloadOffset;
  out.set(src.subarray(appStart, appStart + packet.applicationPayloadLength), w);
  w += packet.applicationPayloadLength;
  const tcpOffset = packet.tcpOffset - packet.start;
  const newTcpHeaderLength = packet.tcpHeaderLength - MARKER_LENGTH;
  out[tcpOffset + 12] = ((newTcpHeaderLength / 4) << 4) | (out[tcpOffset + 12]! & 0x0f);
  finishRewrite(out, packet, tcpOffset, newLength);
  return w;
}

/** Fixes IP length fields, the IPv4 header checksum and the full TCP checksum of `out`. */
function finishRewrite(out: Uint8Array, packet: ParsedPacket, tcpOffset: number, newLength: number): void {
  if (packet.ipVersion === 4) {
    writeUint16(out, 2, newLength);
    writeUint16(out, 10, ipv4HeaderChecksum(out, 0, packet.ipHeaderLength));
  } else {
    writeUint16(out, 4, newLength - 40);
  }
  const sourceOffset = packet.sourceOffset - packet.start;
  writeUint16(out, tcpOffset + 16, tcpChecksum(out, packet.ipVersion, sourceOffset, tcpOffset, newLength - tcpOffset));
}
