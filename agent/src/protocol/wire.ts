// Handshake messages carried in the token area (the body after the datapath's length prefix).
// Pure encode/decode over caller buffers; a body that does not decode is a typed failure.
//
//   every body   version u8 (=3) | type u8
//   SYN (1)      flags u8 | cred JWS | token JWS | nonce[16] | time u32 (unix s)
//                [flags & SYN_PROOF: peerKeyId[8] | proof[16]]
//                [flags & SYN_SIGNATURE: signature[64]]
//   SYN-ACK (2)  flags u8 | cred JWS | token JWS | nonce[16] | proof[16]
//   ACK (3)      proof[16]
// A JWS travels as its three segments base64url-decoded (u16 header | u16 payload | u8
// signature), a quarter smaller than the compact form, which is rebuilt on receipt.
import { SynpassError } from '../errors.ts';

/**
 * 2: SYN and SYN-ACK proofs bind the token they travel with (version 1 proofs did not).
 * 3: the SYN signature and the proofs bind the token's digest, not its signature, so a peer
 * need not verify the token's own signature.
 */
export const WIRE_VERSION = 3;
export const NONCE_BYTES = 16;
export const PROOF_BYTES = 16;
export const KEY_ID_BYTES = 8;
/** ES256 (IEEE P1363 r || s) and Ed25519 signatures are both 64 bytes. */
export const SYN_SIGNATURE_BYTES = 64;

export const MessageType = { Syn: 1, SynAck: 2, Ack: 3 } as const;
export type MessageTypeValue = (typeof MessageType)[keyof typeof MessageType];

/** SYN: the client proves its key to an agent it already knows (fast path, no ACK trip). */
export const FLAG_SYN_PROOF = 0x01;
/** SYN: the client's agent signed nonce and time (first contact, see syn-signature.ts). */
export const FLAG_SYN_SIGNATURE = 0x02;
/** SYN-ACK: the server took the fast path; the handshake ends at the SYN-ACK on both sides. */
export const FLAG_FAST = 0x01;
/** SYN-ACK: the server's kernel now holds this client workload: its next SYNs to this port may
 * carry the kernel fast option instead of a token (see fast-keys.ts). */
export const FLAG_KERNEL = 0x02;

/**
 * A JWS as it travels: the encoded field (length prefixes and raw segments) and a view of its
 * signature, which identifies it in caches without rebuilding the compact form.
 */
export interface PackedJws {
  bytes: Uint8Array;
  signature: Uint8Array;
}

export function packJws(compact: string): PackedJws {
  const parts = compact.split('.');
  if (parts.length !== 3) throw new TypeError('not a compact JWS');
  const [header, payload, signature] = parts.map((part) => Buffer.from(part, 'base64url')) as [Buffer, Buffer, Buffer];
  if (header.length > 0xffff || payload.length > 0xffff || signature.length > 0xff) throw new RangeError('JWS too large');
  const bytes = Buffer.alloc(5 + header.length + payload.length + signature.length);
  let offset = bytes.writeUInt16BE(header.length, 0);
  offset += header.copy(bytes, offset);
  offset = bytes.writeUInt16BE(payload.length, offset);
  offset += payload.copy(bytes, offset);
  offset = bytes.writeUInt8(signature.length, offset);
  signature.copy(bytes, offset);
  return { bytes, signature: bytes.subarray(offset) };
}

/** The compact form, for verification (only on a cache miss). */
export function unpackJws(packed: PackedJws): string {
  const b = Buffer.from(packed.bytes.buffer, packed.bytes.byteOffset, packed.bytes.length);
  const headerLength = b.readUInt16BE(0);
  const payloadLength = b.readUInt16BE(2 + headerLength);
  const payloadStart = 4 + headerLength;
  const signatureStart = payloadStart + payloadLength + 1;
  return `${b.toString('base64url', 2, 2 + headerLength)}.${b.toString('base64url', payloadStart, payloadStart + payloadLength)}.${b.toString('base64url', signatureStart)}`;
}

export interface SynMessage {
  type: typeof MessageType.Syn;
  flags: number;
  credential: PackedJws;
  token: PackedJws;
  nonce: Uint8Array;
  time: number;
  peerKeyId: Uint8Array | null;
  proof: Uint8Array | null;
  signature: Uint8Array | null;
}

export interface SynAckMessage {
  type: typeof MessageType.SynAck;
  flags: number;
  credential: PackedJws;
  token: PackedJws;
  nonce: Uint8Array;
  proof: Uint8Array;
}

export interface AckMessage {
  type: typeof MessageType.Ack;
  proof: Uint8Array;
}

export type HandshakeMessage = SynMessage | SynAckMessage | AckMessage;

export class WireError extends SynpassError<'malformed-handshake' | 'unsupported-version'> {
  override readonly name: string = 'WireError';
  constructor(message: string, code: 'malformed-handshake' | 'unsupported-version' = 'malformed-handshake') {
    super(code, message);
  }
}

/** A body from an agent that speaks another protocol version: told apart for a rollout's sake. */
export class UnsupportedVersionError extends WireError {
  override readonly name = 'UnsupportedVersionError';
  constructor(readonly version: number) {
    super(`protocol version ${version}; this agent speaks ${WIRE_VERSION}`, 'unsupported-version');
  }
}

class Reader {
  offset = 0;
  constructor(private readonly buf: Uint8Array) {}
  u8(): number {
    if (this.offset + 1 > this.buf.length) throw new WireError('truncated');
    return this.buf[this.offset++]!;
  }
  u16(): number {
    return (this.u8() << 8) | this.u8();
  }
  u32(): number {
    return ((this.u16() << 16) | this.u16()) >>> 0;
  }
  bytes(length: number): Uint8Array {
    if (this.offset + length > this.buf.length) throw new WireError('truncated');
    const view = this.buf.subarray(this.offset, this.offset + length);
    this.offset += length;
    return view;
  }
  jws(): PackedJws {
    const start = this.offset;
    this.bytes(this.u16());
    this.bytes(this.u16());
    const signature = this.bytes(this.u8());
    return { bytes: this.buf.subarray(start, this.offset), signature };
  }
  end(): void {
    if (this.offset !== this.buf.length) throw new WireError('trailing bytes');
  }
}

export function decodeMessage(body: Uint8Array): HandshakeMessage {
  const r = new Reader(body);
  const version = r.u8();
  if (version !== WIRE_VERSION) throw new UnsupportedVersionError(version);
  const type = r.u8();
  let message: HandshakeMessage;
  if (type === MessageType.Syn) {
    const flags = r.u8();
    const credential = r.jws();
    const token = r.jws();
    const nonce = r.bytes(NONCE_BYTES);
    const time = r.u32();
    const hasProof = (flags & FLAG_SYN_PROOF) !== 0;
    const peerKeyId = hasProof ? r.bytes(KEY_ID_BYTES) : null;
    const proof = hasProof ? r.bytes(PROOF_BYTES) : null;
    const signature = (flags & FLAG_SYN_SIGNATURE) !== 0 ? r.bytes(SYN_SIGNATURE_BYTES) : null;
    message = { type, flags, credential, token, nonce, time, peerKeyId, proof, signature };
  } else if (type === MessageType.SynAck) {
    const flags = r.u8();
    const credential = r.jws();
    const token = r.jws();
    message = { type, flags, credential, token, nonce: r.bytes(NONCE_BYTES), proof: r.bytes(PROOF_BYTES) };
  } else if (type === MessageType.Ack) {
    message = { type, proof: r.bytes(PROOF_BYTES) };
  } else {
    throw new WireError(`unknown message type ${type}`);
  }
  r.end();
  return message;
}

class Writer {
  offset = 0;
  constructor(readonly buf: Buffer) {}
  u8(value: number): void {
    this.buf[this.offset++] = value;
  }
  u32(value: number): void {
    this.buf.writeUInt32BE(value >>> 0, this.offset);
    this.offset += 4;
  }
  bytes(value: Uint8Array): void {
    this.buf.set(value, this.offset);
    this.offset += value.length;
  }
  jws(packed: PackedJws): void {
    this.bytes(packed.bytes);
  }
}

/** The most bytes `message` encodes to. */
function encodedBound(message: HandshakeMessage): number {
  return message.type === MessageType.Ack ? 2 + PROOF_BYTES : 3 + message.credential.bytes.length + message.token.bytes.length + 128;
}

/** The message in a buffer of its own, for a caller that keeps it. */
export function encodeMessage(message: HandshakeMessage): Buffer {
  // Only the written prefix is ever returned, so nothing stale can leak.
  return encodeMessageInto(message, Buffer.allocUnsafe(encodedBound(message)));
}

const transient = Buffer.alloc(4096);

/**
 * The message encoded into one buffer shared by every call: valid until the next call. For
 * bodies attached at once and never kept (every handshake message the agent sends), it saves
 * allocating a kilobyte per packet.
 */
export function encodeTransient(message: HandshakeMessage): Buffer {
  return encodedBound(message) <= transient.length ? encodeMessageInto(message, transient) : encodeMessage(message);
}

function encodeMessageInto(message: HandshakeMessage, target: Buffer): Buffer {
  const w = new Writer(target);
  w.u8(WIRE_VERSION);
  w.u8(message.type);
  if (message.type === MessageType.Syn) {
    w.u8(message.flags);
    w.jws(message.credential);
    w.jws(message.token);
    w.bytes(message.nonce);
    w.u32(message.time);
    if ((message.flags & FLAG_SYN_PROOF) !== 0) {
      if (!message.peerKeyId || !message.proof) throw new TypeError('SYN proof flag without key id and proof');
      w.bytes(message.peerKeyId);
      w.bytes(message.proof);
    }
    if ((message.flags & FLAG_SYN_SIGNATURE) !== 0) {
      if (message.signature?.length !== SYN_SIGNATURE_BYTES) throw new TypeError('SYN signature flag without a 64-byte signature');
      w.bytes(message.signature);
    }
  } else if (message.type === MessageType.SynAck) {
    w.u8(message.flags);
    w.jws(message.credential);
    w.jws(message.token);
    w.bytes(message.nonce);
    w.bytes(message.proof);
  } else {
    w.bytes(message.proof);
  }
  return w.buf.subarray(0, w.offset);
}
