// The reset that ends a local server's half-open connection whose SYN-ACK the agent refused: it
// comes as from the client, so the server drops its request socket at once instead of
// retransmitting the SYN-ACK for about a minute (each retransmit another queue trip, another
// drop). It goes only to the server; the client still sees nothing. Pure: the caller sends it.
import { ipv4HeaderChecksum, tcpChecksum, writeUint16, writeUint32 } from './checksum.ts';
import { TCP_RST, type ParsedPacket } from './packet.ts';

const IPV4_HEADER = 20;
const IPV6_HEADER = 40;
const TCP_HEADER = 20;
const DEFAULT_TTL = 64;
const PROTOCOL_TCP = 6;

/** Bytes the largest reset takes (IPv6). */
export const SERVER_RESET_MAX_BYTES = IPV6_HEADER + TCP_HEADER;

/**
 * Writes into `out` the reset answering the SYN-ACK `synAck`: from its destination (the client)
 * to its source (the server), with the sequence number the server expects next (the SYN-ACK's
 * acknowledgment), which is the one a server in SYN-RECEIVED accepts a reset at (RFC 9293
 * section 3.10.7.4). Returns its length.
 */
export function buildServerReset(synAck: ParsedPacket, out: Uint8Array): number {
  const v4 = synAck.ipVersion === 4;
  const ipHeader = v4 ? IPV4_HEADER : IPV6_HEADER;
  const length = ipHeader + TCP_HEADER;
  out.fill(0, 0, length);
  const addresses = synAck.addressLength;
  const from = synAck.sourceOffset;
  const sourceOffset = v4 ? 12 : 8;
  // Source and destination swap: the reset comes as from the client.
  out.set(synAck.buf.subarray(from + addresses, from + 2 * addresses), sourceOffset);
  out.set(synAck.buf.subarray(from, from + addresses), sourceOffset + addresses);
  if (v4) {
    out[0] = 0x45;
    writeUint16(out, 2, length);
    out[8] = DEFAULT_TTL;
    out[9] = PROTOCOL_TCP;
  } else {
    out[0] = 0x60;
    writeUint16(out, 4, TCP_HEADER);
    out[6] = PROTOCOL_TCP;
    out[7] = DEFAULT_TTL;
  }
  const tcp = ipHeader;
  writeUint16(out, tcp, synAck.destinationPort);
  writeUint16(out, tcp + 2, synAck.sourcePort);
  writeUint32(out, tcp + 4, synAck.acknowledgment);
  out[tcp + 12] = (TCP_HEADER / 4) << 4;
  out[tcp + 13] = TCP_RST;
  writeUint16(out, tcp + 16, tcpChecksum(out, synAck.ipVersion, sourceOffset, tcp, TCP_HEADER));
  if (v4) writeUint16(out, 10, ipv4HeaderChecksum(out, 0, IPV4_HEADER));
  return length;
}
