// Structure-aware mutation of captured handshake packets, for fuzzing a live agent. A packet is
// taken apart (IP header, IPv6 extension headers, TCP header, options, token area, handshake
// message, payload), one to three of its parts are changed the way a fuzzer or an attacker
// would, and it is put back together with lengths and checksums made right again, unless the
// mutation is about exactly those. The choices come from fast-check with a seed: a run is
// reproducible from its seed and index.
import fc from 'fast-check';
import { ParsedPacket, parsePacket } from '../../agent/src/datapath/packet.ts';
import { MARKER_EXID, MARKER_KIND } from '../../agent/src/datapath/marker.ts';
import { FAST_SYN_OPTION } from '../../agent/src/kernel/layouts.ts';
import { fixChecksums, optionOffset } from './packets.ts';

interface Extension {
  type: number;
  bytes: Buffer;
}

interface Parts {
  version: 4 | 6;
  /** The fixed IP header (IPv4 with its options). */
  ip: Buffer;
  /** IPv6 extension headers in order: the header type and its bytes (next-header byte first). */
  extensions: Extension[];
  tcp: Buffer;
  options: Buffer;
  /** Token area body (without its 2-byte length) when the packet has a marker, else null. */
  body: Buffer | null;
  payload: Buffer;
}

function split(bytes: Uint8Array): Parts {
  const packet = new ParsedPacket();
  if (!parsePacket(bytes, 0, bytes.length, packet)) throw new Error(`base packet does not parse: ${packet.status}`);
  const b = Buffer.from(bytes);
  const fixedIp = packet.ipVersion === 4 ? packet.ipHeaderLength : 40;
  const extensions: Extension[] = [];
  for (let at = fixedIp, type = b[6]!; at < packet.tcpOffset; ) {
    const length = type === 44 ? 8 : (b[at + 1]! + 1) * 8;
    extensions.push({ type, bytes: Buffer.from(b.subarray(at, at + length)) });
    type = b[at]!;
    at += length;
  }
  const body = packet.tokenOffset >= 0 ? b.subarray(packet.tokenOffset, packet.tokenOffset + packet.tokenLength) : null;
  const payloadStart = body === null ? packet.payloadOffset : packet.tokenOffset + packet.tokenLength;
  return {
    version: packet.ipVersion,
    ip: Buffer.from(b.subarray(0, fixedIp)),
    extensions,
    tcp: Buffer.from(b.subarray(packet.tcpOffset, packet.tcpOffset + 20)),
    options: Buffer.from(b.subarray(packet.tcpOffset + 20, packet.tcpOffset + packet.tcpHeaderLength)),
    body: body === null ? null : Buffer.from(body),
    payload: Buffer.from(b.subarray(payloadStart, packet.length)),
  };
}

/** What join() leaves alone because the mutation chose it. */
interface Keep {
  ipLength?: boolean;
  dataOffset?: boolean;
  /** A token-area length prefix other than the body's length. */
  tokenLength?: number;
  checksums?: boolean;
  truncateTo?: number;
}

const IPV6_NEXT_TCP = 6;

function join(parts: Parts, keep: Keep): Uint8Array {
  const tokenArea = parts.body === null ? Buffer.alloc(0) : Buffer.concat([Buffer.alloc(2), parts.body]);
  if (parts.body !== null) tokenArea.writeUInt16BE(keep.tokenLength ?? Math.min(parts.body.length, 0xffff), 0);
  const optionBytes = Buffer.concat([parts.options, Buffer.alloc((4 - (parts.options.length % 4)) % 4, 1)]);
  const tcp = Buffer.from(parts.tcp);
  if (!keep.dataOffset) tcp[12] = (Math.min(15, (20 + optionBytes.length) / 4) << 4) | (tcp[12]! & 0x0f);
  const ip = Buffer.from(parts.ip);
  const extensions = parts.extensions.map((e) => Buffer.from(e.bytes));
  const body = Buffer.concat([tcp, optionBytes, tokenArea, parts.payload]);
  if (parts.version === 6) {
    if (!keep.ipLength) {
      // Chain the next-header bytes: IP -> extensions... -> TCP.
      ip[6] = parts.extensions[0]?.type ?? IPV6_NEXT_TCP;
      extensions.forEach((e, i) => {
        e[0] = parts.extensions[i + 1]?.type ?? IPV6_NEXT_TCP;
      });
      ip.writeUInt16BE(extensions.reduce((sum, e) => sum + e.length, 0) + body.length, 4);
    }
  } else if (!keep.ipLength) {
    ip.writeUInt16BE(ip.length + body.length, 2);
  }
  const headers = Buffer.concat([ip, ...extensions]);
  let out: Uint8Array = Buffer.concat([headers, body]);
  if (!keep.checksums) out = fixChecksums(out, parts.version, headers.length);
  return keep.truncateTo === undefined ? out : out.subarray(0, keep.truncateTo % (out.length + 1));
}

/** One change: its kind and two free numbers it reads positions and values from. */
type Change = [kind: number, a: number, b: number];

/** An extension header of `type` (hop-by-hop, routing, fragment, destination) with PadN filling. */
function extensionHeader(type: number, eights: number, a: number): Buffer {
  if (type === 44) {
    const fragment = Buffer.alloc(8);
    fragment.writeUInt16BE(a & 0xfff9, 2);
    return fragment;
  }
  const header = Buffer.alloc(8 * (eights + 1));
  header[1] = eights;
  if (type === 43) {
    header[2] = a & 0xff; // routing type, 0 deprecated
    header[3] = (a >> 8) & 0x3;
  } else if (header.length > 2) {
    header[2] = 1; // PadN over the rest
    header[3] = header.length - 4;
  }
  return header;
}

const EXTENSION_TYPES = [0, 43, 44, 60];

/** The handshake message offsets inside a body: fields a fuzzer aims at. */
function messageField(body: Buffer, a: number): number {
  // version | type | flags | cred (u16 h | h | u16 p | p | u8 s | s) ...: aim at a length prefix or a byte near one.
  const positions = [0, 1, 2, 3, 4];
  if (body.length > 5) {
    const headerLength = body.readUInt16BE(3);
    positions.push(5 + headerLength, 6 + headerLength);
    if (body.length > 7 + headerLength) positions.push(7 + headerLength + body.readUInt16BE(5 + headerLength));
  }
  return positions[a % positions.length]! % Math.max(1, body.length);
}

const KINDS = 17;

function mutate(parts: Parts, changes: Change[]): Uint8Array {
  const keep: Keep = {};
  for (const [kind, a, b] of changes) {
    switch (kind % KINDS) {
      case 0: // an option's length byte: the walk goes wrong
        if (parts.options.length > 1) parts.options[1 + (a % (parts.options.length - 1))] = b & 0xff;
        break;
      case 1: // options shuffled into another order, or cut
        parts.options = Buffer.concat([parts.options.subarray(a % (parts.options.length + 1)), parts.options.subarray(0, a % (parts.options.length + 1))]);
        break;
      case 2: // the marker with another ExID, length or missing
        {
          const found = parts.options.indexOf(MARKER_KIND);
          const at = found >= 0 && found + 4 <= parts.options.length ? found : -1;
          if (at >= 0 && b % 3 === 0) parts.options.writeUInt16BE((MARKER_EXID + 1 + (a % 0xfffe)) & 0xffff, at + 2);
          else if (at >= 0 && b % 3 === 1) parts.options[at + 1] = a & 0xff;
          else if (at >= 0) parts.options = Buffer.concat([parts.options.subarray(0, at), parts.options.subarray(at + 4)]);
          else parts.options = Buffer.concat([parts.options, Buffer.from([MARKER_KIND, 4, MARKER_EXID >> 8, MARKER_EXID & 0xff])]);
        }
        break;
      case 3: // options padded to the full 40 bytes, or an option area past it
        parts.options = Buffer.concat([parts.options, Buffer.alloc(Math.max(0, (b % 2 === 0 ? 40 : 44) - parts.options.length), a % 2)]);
        keep.dataOffset = b % 2 === 1;
        break;
      case 4: // the token area's length prefix: near the truth, or anything
        parts.body ??= Buffer.alloc(0);
        keep.tokenLength = a % 2 === 0 ? Math.max(0, Math.min(0xffff, parts.body.length + (b % 9) - 4)) : b & 0xffff;
        break;
      case 5: // the body cut short, or junk after it
        if (parts.body !== null) parts.body = a % 2 === 0 ? parts.body.subarray(0, b % (parts.body.length + 1)) : Buffer.concat([parts.body, Buffer.alloc((b % 64) + 1, a & 0xff)]);
        break;
      case 6: // a length prefix or header byte of the message (version, type, flags, JWS segment lengths)
        if (parts.body !== null && parts.body.length > 0) parts.body[messageField(parts.body, a)] = b & 0xff;
        break;
      case 7: // bytes inside the JWS header or payload JSON (alg, kid, claims)
        if (parts.body !== null && parts.body.length > 8) parts.body[5 + (a % (parts.body.length - 5))] = b & 0xff;
        break;
      case 8: // nonce, time, proof or signature: the message's last 100 bytes
        if (parts.body !== null && parts.body.length > 0) {
          const at = Math.max(0, parts.body.length - 1 - (a % 100));
          parts.body[at] = parts.body[at]! ^ ((b % 255) + 1);
        }
        break;
      case 9: // TCP flags and the data offset
        if (a % 2 === 0) parts.tcp[13] = b & 0x3f;
        else {
          parts.tcp[12] = ((b % 16) << 4) | (parts.tcp[12]! & 0x0f);
          keep.dataOffset = true;
        }
        break;
      case 10: // IPv6 extension headers, one or a chain; on IPv4 header options
        if (parts.version === 6) {
          for (let i = 0; i <= a % 3; i++) {
            const type = EXTENSION_TYPES[(a + i) % 4]!;
            parts.extensions.push({ type, bytes: extensionHeader(type, b % 4, b) });
          }
        } else {
          const options = Buffer.alloc(4 * ((b % 10) + 1), a % 2);
          options[0] = a & 0xff;
          parts.ip = Buffer.concat([parts.ip.subarray(0, 20), options]);
          parts.ip[0] = 0x40 | (parts.ip.length / 4);
        }
        break;
      case 11: // IP total or payload length
        keep.ipLength = true;
        // Shorter than the header, a little off the truth, or anything.
        parts.ip.writeUInt16BE(a % 3 === 0 ? b % 20 : a % 3 === 1 ? (parts.ip.length + 20 + (b % 200)) & 0xffff : (a + b) & 0xffff, parts.version === 4 ? 2 : 4);
        break;
      case 12: // IPv4 fragment fields; IPv6 next header
        if (parts.version === 4) parts.ip.writeUInt16BE((a & 0x3fff) | (b % 2 === 0 ? 0x2000 : 0), 6);
        else {
          keep.ipLength = true;
          parts.ip[6] = b & 0xff;
        }
        break;
      case 13: // the packet cut at any point
        keep.truncateTo = a;
        break;
      case 14: // checksums left wrong
        keep.checksums = true;
        parts.tcp[16] = parts.tcp[16]! ^ ((b % 255) + 1);
        break;
      case 15: // the body replaced by random bytes of any length
        parts.body = Buffer.from(Array.from({ length: b % 300 }, (_, i) => (a * (i + 1) * 2654435761) >>> 24));
        break;
      case 16: // the kernel fast path's SYN option (fast id, time, MAC), or the ISN its MAC binds
        {
          const at = optionOffset(parts.options, 0, parts.options.length, FAST_SYN_OPTION.kind, FAST_SYN_OPTION.length, FAST_SYN_OPTION.exid);
          const field = at < 0 ? 0 : b % 4;
          if (field === 0) parts.tcp.writeUInt32BE((parts.tcp.readUInt32BE(4) + 1 + (a % 0xffff)) >>> 0, 4);
          // Within the replay window or anywhere: a fresh time is what a replay would need.
          else if (field === 1) parts.options.writeUInt32BE((parts.options.readUInt32BE(at + 8) + (a % 2 === 0 ? 1 + (a % 20) : a)) >>> 0, at + 8);
          else if (field === 2) parts.options.writeUInt32BE((parts.options.readUInt32BE(at + 4) ^ (1 + (a % 0xffff))) >>> 0, at + 4);
          else parts.options[at + 12 + (a % 8)] = parts.options[at + 12 + (a % 8)]! ^ (1 << ((b >> 2) % 8));
        }
        break;
    }
  }
  return join(parts, keep);
}

const changeArbitrary = fc.array(fc.tuple(fc.nat({ max: KINDS - 1 }), fc.nat(), fc.nat()), { minLength: 1, maxLength: 3 });
const CHUNK = 5_000;

/**
 * `count` mutated packets from `bases` (well-formed packets), reproducible from `seed`: generated
 * lazily, a chunk of choices at a time, so a million costs no more memory than a chunk.
 */
export function* mutatedPackets(bases: readonly Uint8Array[], seed: number, count: number): Generator<Uint8Array> {
  const shapes = bases.map((base) => ({ base, parts: split(base) }));
  for (let start = 0; start < count; start += CHUNK) {
    const plans = fc.sample(fc.tuple(fc.nat({ max: shapes.length - 1 }), changeArbitrary), { seed: seed + start, numRuns: Math.min(CHUNK, count - start) });
    for (const [which, changes] of plans) {
      const { parts } = shapes[which]!;
      const copy: Parts = {
        ...parts,
        ip: Buffer.from(parts.ip),
        extensions: parts.extensions.map((e) => ({ type: e.type, bytes: Buffer.from(e.bytes) })),
        tcp: Buffer.from(parts.tcp),
        options: Buffer.from(parts.options),
        body: parts.body === null ? null : Buffer.from(parts.body),
        payload: Buffer.from(parts.payload),
      };
      yield mutate(copy, changes);
    }
  }
}

/** The reassembly without a change: the base as it was (a test of split and join). */
export function reassembled(base: Uint8Array): Uint8Array {
  return join(split(base), {});
}
