// IPv4/IPv6 + TCP parser. It records offsets into the caller's buffer in one reusable
// ParsedPacket and never throws: a packet it cannot read gets a closed-set `status` instead.
import { readUint16, readUint32 } from './checksum.ts';
import { MARKER_EXID, MARKER_KIND, MARKER_LENGTH, TOKEN_AREA_HEADER } from './marker.ts';

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;

/** Why a packet could not be read; used verbatim as a metric label and drop reason. */
export type ParseStatus =
  | 'ok'
  | 'truncated'
  | 'bad-ip-version'
  | 'bad-ip-header'
  | 'bad-ip-length'
  | 'ip-fragment'
  | 'not-tcp'
  | 'bad-tcp-header'
  | 'bad-tcp-options'
  | 'bad-token-area';

const IPPROTO_TCP = 6;
const IPV6_HOP_BY_HOP = 0;
const IPV6_ROUTING = 43;
const IPV6_FRAGMENT = 44;
const IPV6_DESTINATION = 60;

const OPT_EOL = 0;
const OPT_NOP = 1;
const OPT_MSS = 2;
const OPT_WSCALE = 3;
const OPT_SACK_PERMITTED = 4;
const OPT_SACK = 5;
const OPT_TIMESTAMPS = 8;
const OPT_EXPERIMENT = 254;
/**
 * RFC 6994 ExID of the option the kernel fast path writes into a listener's SYN-ACK when it will
 * sign that listener's answers to fast SYNs (native/bpf/fast_path.h, FAST_READY_EXID).
 */
export const KERNEL_READY_EXID = 0xd352;
/** RFC 6994 ExID of the kernel fast path's SYN option (native/bpf/fast_path.h, FAST_OPT_EXID). */
export const FAST_SYN_EXID = 0xd351;
/** Its length: kind, length, ExID, fast id (4), time (4), MAC (8). */
export const FAST_SYN_LENGTH = 20;

/** One parsed packet; every offset is absolute within `buf`. Reused across packets. */
export class ParsedPacket {
  status: ParseStatus = 'truncated';
  buf: Uint8Array = new Uint8Array(0);
  start = 0;
  /** Length of the IP datagram (may be less than the bytes handed in). */
  length = 0;
  ipVersion: 4 | 6 = 4;
  ipHeaderLength = 0;
  sourceOffset = 0;
  addressLength = 4;
  tcpOffset = 0;
  tcpHeaderLength = 0;
  /** Bytes after the TCP header, token area included when a marker is present. */
  payloadOffset = 0;
  payloadLength = 0;
  sourcePort = 0;
  destinationPort = 0;
  sequence = 0;
  acknowledgment = 0;
  flags = 0;
  /** Options as read from the wire; -1 when absent. */
  mss = -1;
  windowScale = -1;
  sackPermitted = false;
  sackBlocks = 0;
  timestampValue = -1;
  timestampEcho = -1;
  /** Absolute offset of the synpass marker option, or -1. */
  markerOffset = -1;
  /** A SYN-ACK written by a listener whose kernel signs answers to fast SYNs (the fast path's ready option). */
  kernelReady = false;
  /** A SYN carrying the kernel fast path's option (written by a client's sock_ops program). */
  fastSyn = false;
  /** Token area body (after its 2-byte length) when a marker is present, else -1. */
  tokenOffset = -1;
  tokenLength = 0;

  get isSyn(): boolean {
    return (this.flags & (TCP_SYN | TCP_ACK)) === TCP_SYN;
  }
  get isSynAck(): boolean {
    return (this.flags & (TCP_SYN | TCP_ACK)) === (TCP_SYN | TCP_ACK);
  }
  get hasMarker(): boolean {
    return this.markerOffset >= 0;
  }
  /** Payload bytes that belong to the application (after any token area). */
  get applicationPayloadOffset(): number {
    return this.tokenOffset >= 0 ? this.tokenOffset + this.tokenLength : this.payloadOffset;
  }
  get applicationPayloadLength(): number {
    return this.payloadOffset + this.payloadLength - this.applicationPayloadOffset;
  }
}

/**
 * Parses the IP packet at buf[start, start + available). Returns true when `out.status` is 'ok'.
 * Bytes past the IP total length (link padding) are ignored.
 */
export function parsePacket(buf: Uint8Array, start: number, available: number, out: ParsedPacket): boolean {
  out.buf = buf;
  out.start = start;
  out.markerOffset = -1;
  out.kernelReady = false;
  out.fastSyn = false;
  out.tokenOffset = -1;
  out.tokenLength = 0;
  out.mss = -1;
  out.windowScale = -1;
  out.sackPermitted = false;
  out.sackBlocks = 0;
  out.timestampValue = -1;
  out.timestampEcho = -1;
  out.status = parseIp(buf, start, available, out);
  if (out.status === 'ok') out.status = parseTcp(buf, out);
  return out.status === 'ok';
}

function parseIp(buf: Uint8Array, start: number, available: number, out: ParsedPacket): ParseStatus {
  if (available < 1 || start + available > buf.length) return 'truncated';
  const version = buf[start]! >>> 4;
  if (version === 4) return parseIpv4(buf, start, available, out);
  if (version === 6) return parseIpv6(buf, start, available, out);
  return 'bad-ip-version';
}

function parseIpv4(buf: Uint8Array, start: number, available: number, out: ParsedPacket): ParseStatus {
  if (available < 20) return 'truncated';
  const headerLength = (buf[start]! & 0x0f) * 4;
  if (headerLength < 20) return 'bad-ip-header';
  const totalLength = readUint16(buf, start + 2);
  if (totalLength < headerLength) return 'bad-ip-length';
  if (totalLength > available) return 'truncated';
  const fragment = readUint16(buf, start + 6);
  // More-fragments set or a non-zero offset: TCP header may be absent or split.
  if ((fragment & 0x3fff) !== 0) return 'ip-fragment';
  if (buf[start + 9] !== IPPROTO_TCP) return 'not-tcp';
  out.ipVersion = 4;
  out.length = totalLength;
  out.ipHeaderLength = headerLength;
  out.sourceOffset = start + 12;
  out.addressLength = 4;
  out.tcpOffset = start + headerLength;
  return 'ok';
}

function parseIpv6(buf: Uint8Array, start: number, available: number, out: ParsedPacket): ParseStatus {
  if (available < 40) return 'truncated';
  const payloadLength = readUint16(buf, start + 4);
  const totalLength = 40 + payloadLength;
  if (totalLength > available) return 'truncated';
  let nextHeader = buf[start + 6]!;
  let offset = start + 40;
  const end = start + totalLength;
  // Walk the extension headers a TCP segment may legitimately follow (RFC 8200 section 4).
  for (let hops = 0; hops < 8; hops++) {
    if (nextHeader === IPPROTO_TCP) {
      out.ipVersion = 6;
      out.length = totalLength;
      out.ipHeaderLength = offset - start;
      out.sourceOffset = start + 8;
      out.addressLength = 16;
      out.tcpOffset = offset;
      return 'ok';
    }
    if (nextHeader === IPV6_FRAGMENT) return 'ip-fragment';
    if (nextHeader !== IPV6_HOP_BY_HOP && nextHeader !== IPV6_ROUTING && nextHeader !== IPV6_DESTINATION) {
      return 'not-tcp';
    }
    if (offset + 8 > end) return 'bad-ip-header';
    const extensionLength = (buf[offset + 1]! + 1) * 8;
    if (offset + extensionLength > end) return 'bad-ip-header';
    nextHeader = buf[offset]!;
    offset += extensionLength;
  }
  return 'bad-ip-header';
}

function parseTcp(buf: Uint8Array, out: ParsedPacket): ParseStatus {
  const tcp = out.tcpOffset;
  const end = out.start + out.length;
  if (tcp + 20 > end) return 'bad-tcp-header';
  const headerLength = (buf[tcp + 12]! >>> 4) * 4;
  if (headerLength < 20 || tcp + headerLength > end) return 'bad-tcp-header';
  out.tcpHeaderLength = headerLength;
  out.sourcePort = readUint16(buf, tcp);
  out.destinationPort = readUint16(buf, tcp + 2);
  out.sequence = readUint32(buf, tcp + 4);
  out.acknowledgment = readUint32(buf, tcp + 8);
  out.flags = buf[tcp + 13]!;
  out.payloadOffset = tcp + headerLength;
  out.payloadLength = end - out.payloadOffset;
  if (!walkOptions(buf, tcp + 20, tcp + headerLength, out)) return 'bad-tcp-options';
  if (out.markerOffset >= 0) return readTokenArea(buf, out);
  return 'ok';
}

/** Option walk per RFC 9293 section 3.1; also records the marker when it is the last option word. */
function walkOptions(buf: Uint8Array, start: number, end: number, out: ParsedPacket): boolean {
  let i = start;
  while (i < end) {
    const kind = buf[i]!;
    if (kind === OPT_EOL) break;
    if (kind === OPT_NOP) {
      i += 1;
      continue;
    }
    if (i + 1 >= end) return false;
    const length = buf[i + 1]!;
    if (length < 2 || i + length > end) return false;
    switch (kind) {
      case OPT_MSS:
        if (length !== 4) return false;
        out.mss = readUint16(buf, i + 2);
        break;
      case OPT_WSCALE:
        if (length !== 3) return false;
        out.windowScale = buf[i + 2]!;
        break;
      case OPT_SACK_PERMITTED:
        if (length !== 2) return false;
        out.sackPermitted = true;
        break;
      case OPT_SACK:
        if ((length - 2) % 8 !== 0 || length === 2) return false;
        out.sackBlocks = (length - 2) / 8;
        break;
      case OPT_TIMESTAMPS:
        if (length !== 10) return false;
        out.timestampValue = readUint32(buf, i + 2);
        out.timestampEcho = readUint32(buf, i + 6);
        break;
      case OPT_EXPERIMENT:
        if (length === 4 && readUint16(buf, i + 2) === KERNEL_READY_EXID) out.kernelReady = true;
        else if (length === FAST_SYN_LENGTH && readUint16(buf, i + 2) === FAST_SYN_EXID) out.fastSyn = true;
        break;
      default:
        break;
    }
    i += length;
  }
  // The marker is appended as the final 4-byte word of the option space (after any EOL
  // padding), which lets detach restore the original options byte for byte.
  const last = end - MARKER_LENGTH;
  if (
    last >= start &&
    buf[last] === MARKER_KIND &&
    buf[last + 1] === MARKER_LENGTH &&
    readUint16(buf, last + 2) === MARKER_EXID
  ) {
    out.markerOffset = last;
  }
  return true;
}

function readTokenArea(buf: Uint8Array, out: ParsedPacket): ParseStatus {
  if (out.payloadLength < TOKEN_AREA_HEADER) return 'bad-token-area';
  const bodyLength = readUint16(buf, out.payloadOffset);
  if (TOKEN_AREA_HEADER + bodyLength > out.payloadLength) return 'bad-token-area';
  out.tokenOffset = out.payloadOffset + TOKEN_AREA_HEADER;
  out.tokenLength = bodyLength;
  return 'ok';
}
