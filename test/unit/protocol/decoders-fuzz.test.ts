// Property-based fuzzing of every decoder that reads bytes an attacker chooses: the packet
// parser, the handshake message codec and the JWS, credential and token decoders. Each must
// answer with a value or its own typed error, never anything else. Seeded and reproducible:
// FUZZ_SEED=<n> replays a run, FUZZ_RUNS=<n> widens it.
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ParsedPacket, parsePacket, type ParseStatus } from '../../../agent/src/datapath/packet.ts';
import { REASONS } from '../../../agent/src/datapath/reasons.ts';
import { decodeMessage, encodeMessage, MessageType, NONCE_BYTES, PROOF_BYTES, WireError, type HandshakeMessage, type PackedJws } from '../../../agent/src/protocol/wire.ts';
import { verifyCredential } from '../../../agent/src/token/credential.ts';
import { TokenError } from '../../../agent/src/token/errors.ts';
import { verifyIdentityToken } from '../../../agent/src/token/identity-token.ts';
import { decodeJws } from '../../../agent/src/token/jws.ts';
import { IPV4_ACK, IPV4_SYN, IPV4_SYN_FULL_OPTIONS, IPV6_HOP_BY_HOP_SYN, IPV6_SYN } from '../../../scripts/lib/fixtures.ts';
import { createAgent, createDomain, type TestAgent, type TestDomain } from '../../../scripts/lib/identities.ts';

const seed = Number(process.env.FUZZ_SEED ?? 20261203);
const numRuns = Number(process.env.FUZZ_RUNS ?? 2000);
const settings = { seed, numRuns };

/** A valid packet with some bytes overwritten and maybe cut short: the shapes a fuzzer finds. */
const mutatedPacket = fc
  .record({
    base: fc.constantFrom(IPV4_SYN, IPV4_ACK, IPV4_SYN_FULL_OPTIONS, IPV6_SYN, IPV6_HOP_BY_HOP_SYN),
    edits: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }),
    keep: fc.option(fc.nat(), { nil: undefined }),
  })
  .map(({ base, edits, keep }) => {
    const bytes = Uint8Array.from(base);
    for (const [at, value] of edits) bytes[at % bytes.length] = value;
    return keep === undefined ? bytes : bytes.subarray(0, keep % (bytes.length + 1));
  });

const bytes = (maxLength: number) => fc.uint8Array({ maxLength });
const packed = fc.record({ header: bytes(40), payload: bytes(120), signature: bytes(64) }).map(({ header, payload, signature }): PackedJws => {
  const out = Buffer.alloc(5 + header.length + payload.length + signature.length);
  let offset = out.writeUInt16BE(header.length, 0);
  out.set(header, offset);
  offset = out.writeUInt16BE(payload.length, offset + header.length);
  out.set(payload, offset);
  offset = out.writeUInt8(signature.length, offset + payload.length);
  out.set(signature, offset);
  return { bytes: out, signature: out.subarray(offset) };
});
const fixed = (length: number) => fc.uint8Array({ minLength: length, maxLength: length });
const message: fc.Arbitrary<HandshakeMessage> = fc.oneof(
  fc.record({
    type: fc.constant(MessageType.Syn),
    flags: fc.constant(0),
    credential: packed,
    token: packed,
    nonce: fixed(NONCE_BYTES),
    time: fc.nat(),
    peerKeyId: fc.constant(null),
    proof: fc.constant(null),
    signature: fc.constant(null),
  }),
  fc.record({ type: fc.constant(MessageType.SynAck), flags: fc.integer({ min: 0, max: 1 }), credential: packed, token: packed, nonce: fixed(NONCE_BYTES), proof: fixed(PROOF_BYTES) }),
  fc.record({ type: fc.constant(MessageType.Ack), proof: fixed(PROOF_BYTES) }),
);

/** A compact JWS built from pieces an attacker picks: JSON-ish headers, any payload, any signature. */
const compactJws = fc
  .record({
    header: fc.oneof(fc.json(), fc.constantFrom('{"alg":"EdDSA","kid":"k"}', '{"alg":"ES256","kid":"k","typ":"synpass-agent+jwt"}', '{"alg":"none","kid":"k"}')),
    payload: fc.oneof(fc.json(), fc.constantFrom('{"iss":"d","sub":"spiffe://d/agent/x","exp":9999999999,"ns":["app"],"cnf":{}}')),
    signature: bytes(80),
    dots: fc.constantFrom(2, 2, 2, 1, 3),
  })
  .map(({ header, payload, signature, dots }) => {
    const parts = [Buffer.from(header).toString('base64url'), Buffer.from(payload).toString('base64url'), Buffer.from(signature).toString('base64url')];
    return dots === 2 ? parts.join('.') : dots === 1 ? parts.slice(0, 2).join('.') : [...parts, 'x'].join('.');
  });

/** A message with every byte field as hex, so Buffer and Uint8Array views compare by content. */
function plain(value: unknown): unknown {
  if (value instanceof Uint8Array) return Buffer.from(value).toString('hex');
  if (value === null || typeof value !== 'object') return value;
  return Object.fromEntries(Object.entries(value).map(([key, field]) => [key, plain(field)]));
}

function onlyTokenErrors(run: () => unknown): void {
  try {
    run();
  } catch (error) {
    assert.ok(error instanceof TokenError, `not a TokenError: ${String(error)}`);
    assert.ok(error.code in REASONS || error.code === 'expired' || error.code === 'unknown-kid', `unknown code ${error.code}`);
  }
}

describe('decoders under fuzzing (fast-check)', () => {
  let domain: TestDomain;
  let agent: TestAgent;

  before(async () => {
    domain = await createDomain('fuzz.synpass');
    agent = await createAgent(domain, 'fuzz');
  });

  it('parsePacket never throws and reports a status from its closed set', () => {
    const statuses = new Set<ParseStatus>(['ok', 'truncated', 'bad-ip-version', 'bad-ip-header', 'bad-ip-length', 'ip-fragment', 'not-tcp', 'bad-tcp-header', 'bad-tcp-options', 'bad-token-area']);
    const packet = new ParsedPacket();
    fc.assert(
      fc.property(fc.oneof(mutatedPacket, bytes(120)), (input) => {
        const ok = parsePacket(input, 0, input.length, packet);
        assert.equal(ok, packet.status === 'ok');
        assert.ok(statuses.has(packet.status), packet.status);
      }),
      settings,
    );
  });

  it('a handshake message survives encode and decode unchanged', () => {
    fc.assert(
      fc.property(message, (original) => {
        assert.deepEqual(plain(decodeMessage(encodeMessage(original))), plain(original));
      }),
      settings,
    );
  });

  it('decodeMessage answers any body, whole or mutated, with a message or a WireError', () => {
    const mutated = fc.tuple(message, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }), fc.option(fc.nat(), { nil: undefined })).map(([original, edits, keep]) => {
      const body = Uint8Array.from(encodeMessage(original));
      for (const [at, value] of edits) body[at % body.length] = value;
      return keep === undefined ? body : body.subarray(0, keep % (body.length + 1));
    });
    fc.assert(
      fc.property(fc.oneof(mutated, bytes(300)), (body) => {
        try {
          decodeMessage(body);
        } catch (error) {
          assert.ok(error instanceof WireError, `not a WireError: ${String(error)}`);
        }
      }),
      settings,
    );
  });

  it('the JWS, credential and token decoders answer any compact string with a value or a TokenError', () => {
    const now = Math.floor(Date.now() / 1000);
    fc.assert(
      fc.property(fc.oneof(compactJws, fc.string({ maxLength: 200 })), (compact) => {
        onlyTokenErrors(() => decodeJws(compact));
        onlyTokenErrors(() => verifyCredential(compact, domain.bundles, now));
        onlyTokenErrors(() => verifyIdentityToken(compact, agent.credential, now));
      }),
      settings,
    );
  });
});
