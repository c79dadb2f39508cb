// Replaces the handshake message of a token-bearing packet, keeping every other byte: the way
// an on-path attacker would tamper with a captured packet.
import { ParsedPacket, parsePacket } from '../../agent/src/datapath/packet.ts';
import { attachToken, detachToken } from '../../agent/src/datapath/rewrite.ts';

function parse(bytes: Uint8Array): ParsedPacket {
  const packet = new ParsedPacket();
  if (!parsePacket(bytes, 0, bytes.length, packet)) throw new Error(`packet does not parse: ${packet.status}`);
  return packet;
}

export function bodyOf(bytes: Uint8Array): Buffer {
  const packet = parse(bytes);
  return Buffer.from(packet.buf.subarray(packet.tokenOffset, packet.tokenOffset + packet.tokenLength));
}

export function withBody(bytes: Uint8Array, edit: (body: Buffer) => Uint8Array): Uint8Array {
  const plain = new Uint8Array(2048);
  const plainLength = detachToken(parse(bytes), plain);
  const body = edit(bodyOf(bytes));
  const out = new Uint8Array(2048);
  return out.slice(0, attachToken(parse(plain.slice(0, plainLength)), body, body.length, out, 1500));
}
