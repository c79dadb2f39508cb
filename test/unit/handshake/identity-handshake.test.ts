import { before, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { ParsedPacket, parsePacket } from '../../../agent/src/datapath/packet.ts';
import { attachToken } from '../../../agent/src/datapath/rewrite.ts';
import { decodeMessage, encodeMessage, FLAG_KERNEL, MessageType, packJws, unpackJws } from '../../../agent/src/protocol/wire.ts';
import type { AdmittedClient, FastServer, KernelPath, LocalWorkloadAt, PodPair, ServiceRoute } from '../../../agent/src/handshake/kernel-path.ts';
import { Admission, type AdmissionConfig } from '../../../agent/src/handshake/admission.ts';
import { AdmissionAuthorizer } from '../../../agent/src/handshake/authorizer.ts';
import { ProcessAttestor } from '../../../agent/src/identity/attestors/process.ts';
import { StaticAttestor } from '../../../agent/src/identity/attestors/static.ts';
import type { LocalIdentity, WorkloadIdentity } from '../../../agent/src/identity/local-identity.ts';
import type { VerifiedIdentity } from '../../../agent/src/token/identity-token.ts';
import { IPV4_ACK, IPV4_SYN, IPV4_SYN_ACK, withValidChecksums } from '../../../scripts/lib/fixtures.ts';
import { fixChecksums } from '../../../scripts/lib/packets.ts';
import { createDomain, handlerFor, identityHandler, reissued, type HandlerOptions, type TestDomain } from '../../../scripts/lib/identities.ts';
import { VirtualQueue, type Verdict } from '../../../agent/src/datapath/virtual-queue.ts';
import { bodyOf, withBody } from '../../../scripts/lib/rebody.ts';
import type { Reason } from '../../../agent/src/datapath/reasons.ts';
import { decodeSavedTables, encodeSavedTables, type ClientToSave, type ServerToSave } from '../../../agent/src/kernel/saved-tables.ts';

// Fixture addresses: client 10.213.5.1:25750, server 10.213.5.2:7000.
const SYN = withValidChecksums(IPV4_SYN);
const SYN_ACK = withValidChecksums(IPV4_SYN_ACK);
const ACK = withValidChecksums(IPV4_ACK);
/** The first ACK with FIN set: a client that closes as soon as it is connected. */
const FIN_ACK = withValidChecksums(Uint8Array.from(IPV4_ACK).fill(0x11, 33, 34));

const admission: AdmissionConfig = {
  protectedPorts: [7000],
  allow: [{ subject: 'spiffe://hs.synpass/web*', attributes: { 'app.tier': 'frontend' } }],
  allowWithoutIdentity: [{ cidr: '10.99.0.0/16', ports: [7000] }],
};

function handlerOptions(tier: string, clock: () => number, workloads: WorkloadIdentity[] = [], signatureChecksPerSource?: number): HandlerOptions {
  return {
    attributes: { 'app.tier': tier },
    admission,
    workloads,
    clock,
    namespaces: ['app', 'process'],
    ...(signatureChecksPerSource === undefined ? {} : { signatureChecksPerSource }),
  };
}

async function agent(domain: TestDomain, id: string, tier: string, clock: () => number, workloads: WorkloadIdentity[] = [], signatureChecksPerSource?: number) {
  return onVirtualQueue(await identityHandler(domain, id, handlerOptions(tier, clock, workloads, signatureChecksPerSource)));
}

/** The agent `local` is, started again with the same keys (and nothing else of its previous run). */
function restarted(local: LocalIdentity, tier: string, clock: () => number) {
  return onVirtualQueue(handlerFor(local, handlerOptions(tier, clock)));
}

function onVirtualQueue({ handler, verifier, local }: ReturnType<typeof handlerFor>) {
  const events: { reason: string; accepted: boolean; peer: string | undefined }[] = [];
  const queue = new VirtualQueue(handler, (event) => {
    if (event.stage !== 'ack') events.push({ reason: event.reason, accepted: event.accepted, peer: event.peer?.subject });
  });
  return { queue, events, verifier, handler, local };
}

/** The workload of uid 1234 on a client agent, a tier admission does not name. */
function batchWorkload(...attestors: WorkloadIdentity['attestors']): WorkloadIdentity {
  return {
    name: 'batch',
    subject: 'spiffe://hs.synpass/batch',
    uids: [1234],
    cgroups: [],
    ports: [],
    attestors: [new StaticAttestor({ 'app.tier': 'batch' }), ...attestors],
  };
}

function parsed(bytes: Uint8Array): ParsedPacket {
  const packet = new ParsedPacket();
  assert.ok(parsePacket(bytes, 0, bytes.length, packet), packet.status);
  return packet;
}

function reasonOf(v: Verdict, queue: VirtualQueue, reason: Reason): void {
  assert.equal(v.dropped, true, `expected a drop (${reason})`);
  assert.equal(queue.engine.verdicts.get('ingress', 'drop', reason) + queue.engine.verdicts.get('egress', 'drop', reason) > 0, true, reason);
}

describe('identity handshake over a virtual wire', () => {
  let domain: TestDomain;
  let time = Date.now();
  const clock = () => time;
  let client: Awaited<ReturnType<typeof agent>>;
  let server: Awaited<ReturnType<typeof agent>>;
  let outsiderAgent: Awaited<ReturnType<typeof agent>>;

  before(async () => {
    domain = await createDomain('hs.synpass');
  });

  beforeEach(async () => {
    time = Date.now();
    client = await agent(domain, 'web', 'frontend', clock);
    server = await agent(domain, 'api', 'backend', clock);
    outsiderAgent = await agent(domain, 'batch', 'batch', clock);
  });

  /** A whole first-contact handshake, ACK proof included: afterwards the pair is known. */
  function completeFirstContact(): void {
    handshake();
    server.queue.deliver(client.queue.deliver(ACK, 'egress').bytes, 'ingress');
  }

  /** Runs SYN -> SYN-ACK -> ACK and returns every verdict. */
  function handshake(c = client, s = server) {
    const synOut = c.queue.deliver(SYN, 'egress');
    const synIn = s.queue.deliver(synOut.bytes, 'ingress');
    const synAckOut = s.queue.deliver(SYN_ACK, 'egress');
    const synAckIn = c.queue.deliver(synAckOut.bytes, 'ingress');
    return { synOut, synIn, synAckOut, synAckIn };
  }

  it('first contact: both ends verify each other, the ACK carries the client proof, the kernel sees plain packets', () => {
    const { synOut, synIn, synAckOut, synAckIn } = handshake();
    assert.equal(parsed(synOut.bytes).hasMarker, true);
    assert.deepEqual(synIn.bytes, SYN, 'server kernel gets the original SYN back');
    assert.equal(synIn.tracked, true);
    assert.deepEqual(synAckIn.bytes, SYN_ACK);
    assert.equal(synAckIn.released, false);
    const ackOut = client.queue.deliver(ACK, 'egress');
    assert.equal(ackOut.released, true);
    assert.equal(decodeMessage(parsed(ackOut.bytes).buf.subarray(parsed(ackOut.bytes).tokenOffset)).type, MessageType.Ack);
    const ackIn = server.queue.deliver(ackOut.bytes, 'ingress');
    assert.equal(ackIn.dropped, false);
    assert.equal(ackIn.released, true);
    assert.deepEqual(ackIn.bytes, ACK);
    assert.equal(server.events[0]?.peer, 'spiffe://hs.synpass/web');
    assert.equal(client.events.find((e) => e.peer)?.peer, 'spiffe://hs.synpass/api');
    assert.equal(synAckOut.released, false);
  });

  it('known peer: the SYN carries a proof and both ends release at the SYN-ACK (no ACK trip), with no new verification', () => {
    completeFirstContact();
    const verifications = server.verifier.cacheStats().tokens!.misses;
    // A new connection: another ISN on the same ports would be a new flow; use a new source port.
    const syn2 = Uint8Array.from(SYN);
    syn2[21] = 0x97;
    const synAck2 = Uint8Array.from(SYN_ACK);
    synAck2[23] = 0x97;
    const synIn = server.queue.deliver(client.queue.deliver(withValidChecksums(syn2), 'egress').bytes, 'ingress');
    assert.equal(synIn.dropped, false);
    const synAckOut = server.queue.deliver(withValidChecksums(synAck2), 'egress');
    assert.equal(synAckOut.released, true, 'server releases at SYN-ACK');
    const synAckIn = client.queue.deliver(synAckOut.bytes, 'ingress');
    assert.equal(synAckIn.released, true, 'client releases at SYN-ACK');
    assert.equal(server.verifier.cacheStats().tokens!.misses, verifications, 'token came from cache');
    assert.equal(server.events.at(-2)?.reason, 'ok-fast');
  });

  /** The same packets on another client port: a new connection between the same hosts. */
  function onPort(bytes: Uint8Array, portOffset: number, lowByte = 0x97): Uint8Array {
    const copy = Uint8Array.from(bytes);
    copy[portOffset] = lowByte;
    return withValidChecksums(copy);
  }

  function synMessage(bytes: Uint8Array) {
    const packet = parsed(bytes);
    const message = decodeMessage(packet.buf.subarray(packet.tokenOffset, packet.tokenOffset + packet.tokenLength));
    assert.equal(message.type, MessageType.Syn);
    if (message.type !== MessageType.Syn) throw new Error('not a SYN');
    return message;
  }

  it('a first-contact SYN is signed by the client agent; a known-peer SYN carries a pair-key proof instead', () => {
    const { synOut } = handshake();
    const first = synMessage(synOut.bytes);
    assert.ok(first.signature !== null && first.proof === null);
    server.queue.deliver(client.queue.deliver(ACK, 'egress').bytes, 'ingress');
    const second = synMessage(client.queue.deliver(onPort(SYN, 21), 'egress').bytes);
    assert.ok(second.signature === null && second.proof !== null);
  });

  it('cloaks a SYN rebuilt from a captured credential and token: a fresh nonce breaks the signature, none proves nothing', () => {
    const synOut = client.queue.deliver(SYN, 'egress');
    const rebuilt = (change: (message: ReturnType<typeof synMessage>) => ReturnType<typeof synMessage>) =>
      withBody(synOut.bytes, (body) => {
        const message = decodeMessage(body);
        if (message.type !== MessageType.Syn) throw new Error('not a SYN');
        return encodeMessage(change(message));
      });
    reasonOf(server.queue.deliver(rebuilt((m) => ({ ...m, nonce: randomBytes(16) })), 'ingress'), server.queue, 'bad-proof');
    reasonOf(server.queue.deliver(rebuilt((m) => ({ ...m, time: m.time + 1 })), 'ingress'), server.queue, 'bad-proof');
    reasonOf(server.queue.deliver(rebuilt((m) => ({ ...m, flags: 0, signature: null })), 'ingress'), server.queue, 'unproven-syn');
    assert.equal(server.events.filter((e) => !e.accepted).length, 3);
    assert.equal(server.queue.deliver(synOut.bytes, 'ingress').dropped, false, 'the genuine SYN still passes');
  });

  it('a credential whose key-agreement key has small order is refused as bad-claims, at the SYN and at the SYN-ACK, and costs the genuine handshake nothing', async () => {
    // What a CA that signs whatever it is asked would issue: the peer's own credential with the
    // X25519 point of order 1 (u = 1) as its key-agreement key. Every pair key with it would be
    // public. Before 2026-12-07 such a key failed inside OpenSSL as a handler error.
    const smallOrder = Buffer.alloc(32);
    smallOrder[0] = 1;
    const withSmallOrderKey = async (bytes: Uint8Array) => {
      const message = decodeMessage(bodyOf(bytes));
      if (message.type === MessageType.Ack) throw new Error('an ACK carries no credential');
      const credential = await reissued(domain, unpackJws(message.credential), (claims) => {
        const cnf = claims.cnf as { kex: Record<string, string> };
        return { ...claims, cnf: { ...cnf, kex: { ...cnf.kex, x: smallOrder.toString('base64url') } } };
      });
      return withBody(bytes, () => encodeMessage({ ...message, credential: packJws(credential) }));
    };
    const synOut = client.queue.deliver(SYN, 'egress');
    // The SYN signature covers the token, not the credential: it still verifies.
    reasonOf(server.queue.deliver(await withSmallOrderKey(synOut.bytes), 'ingress'), server.queue, 'bad-claims');
    assert.equal(server.queue.deliver(synOut.bytes, 'ingress').dropped, false, 'the genuine SYN is no replay of it');
    const synAckOut = server.queue.deliver(SYN_ACK, 'egress');
    reasonOf(client.queue.deliver(await withSmallOrderKey(synAckOut.bytes), 'ingress'), client.queue, 'bad-claims');
    assert.equal(client.queue.deliver(synAckOut.bytes, 'ingress').dropped, false, 'the genuine SYN-ACK still passes');
  });

  it('a token altered in transit is refused by the SYN signature over its digest, named by no identity and never cached', () => {
    const synOut = client.queue.deliver(SYN, 'egress');
    // The claims changed, the token's own signature kept: the server never checks that signature.
    const altered = withBody(synOut.bytes, (body) => {
      const message = decodeMessage(body);
      if (message.type !== MessageType.Syn) throw new Error('not a SYN');
      const [header, payload, signature] = unpackJws(message.token).split('.') as [string, string, string];
      const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { sub: string };
      claims.sub = 'spiffe://hs.synpass/web-admin';
      return encodeMessage({ ...message, token: packJws(`${header}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${signature}`) });
    });
    const cached = server.verifier.tokens.size;
    reasonOf(server.queue.deliver(altered, 'ingress'), server.queue, 'bad-proof');
    assert.equal(server.events.at(-1)?.peer, undefined, 'a claimed identity is not logged as the peer');
    assert.equal(server.verifier.tokens.size, cached, 'the altered token is not cached');
    assert.equal(server.queue.deliver(synOut.bytes, 'ingress').dropped, false, 'the genuine SYN passes');
    assert.equal(server.verifier.tokens.size, cached + 1, 'the genuine token is cached once its signature checked out');
  });

  it("holds a source to its budget of signature checks: past it a first-contact SYN is dropped unverified until the next second", async () => {
    const limited = await agent(domain, 'api', 'backend', clock, [], 3);
    const synOut = client.queue.deliver(SYN, 'egress');
    const forged = () =>
      withBody(synOut.bytes, (body) => {
        const message = decodeMessage(body);
        if (message.type !== MessageType.Syn) throw new Error('not a SYN');
        return encodeMessage({ ...message, nonce: randomBytes(16) });
      });
    for (let i = 0; i < 3; i++) reasonOf(limited.queue.deliver(forged(), 'ingress'), limited.queue, 'bad-proof');
    reasonOf(limited.queue.deliver(forged(), 'ingress'), limited.queue, 'signature-rate-limited');
    assert.equal(limited.queue.engine.verdicts.get('ingress', 'drop', 'bad-proof'), 3);
    // The genuine SYN of that source waits for the budget too, and passes once it refills.
    assert.equal(limited.queue.deliver(synOut.bytes, 'ingress').dropped, true);
    time += 1_000;
    assert.equal(limited.queue.deliver(synOut.bytes, 'ingress').dropped, false);
    assert.equal(limited.queue.engine.verdicts.get('ingress', 'drop', 'signature-rate-limited'), 2);
  });

  it('a server that rotated its keys (SIGHUP) still takes a SYN proved to its old key, and answers under the new one', async () => {
    completeFirstContact();
    const rotated = (await agent(domain, 'api', 'backend', clock)).local;
    server.verifier.reconfigure(rotated.bundles, { kex: rotated.kex, kexRaw: rotated.kexRaw });
    server.handler.useIdentity(rotated);
    const syn2 = onPort(SYN, 21);
    const fastSyn = client.queue.deliver(syn2, 'egress');
    assert.ok(synMessage(fastSyn.bytes).proof !== null && synMessage(fastSyn.bytes).signature === null, 'proved to the old key, unsigned');
    const tampered = withBody(fastSyn.bytes, (body) => {
      const message = decodeMessage(body);
      if (message.type !== MessageType.Syn) throw new Error('not a SYN');
      return encodeMessage({ ...message, nonce: randomBytes(16) });
    });
    reasonOf(server.queue.deliver(tampered, 'ingress'), server.queue, 'bad-proof');
    const synIn = server.queue.deliver(fastSyn.bytes, 'ingress');
    assert.equal(synIn.dropped, false, 'no retransmission needed');
    assert.equal(server.events.at(-1)?.reason, 'ok', 'not the fast path');
    const synAckIn = client.queue.deliver(server.queue.deliver(onPort(SYN_ACK, 23), 'egress').bytes, 'ingress');
    assert.equal(synAckIn.dropped, false);
    assert.equal(synAckIn.released, false);
    const ackIn = server.queue.deliver(client.queue.deliver(onPort(ACK, 21), 'egress').bytes, 'ingress');
    assert.equal(ackIn.released, true);
    // The client learned the new key: its next SYN takes the fast path again.
    const next = server.queue.deliver(client.queue.deliver(onPort(SYN, 21, 0x98), 'egress').bytes, 'ingress');
    assert.equal(next.dropped, false);
    assert.equal(server.events.at(-1)?.reason, 'ok-fast');
  });

  it('a client that rotated its keys between its SYN and the SYN-ACK (a renewal) still completes the handshake under the keys its SYN carried', async () => {
    completeFirstContact();
    const syn2 = onPort(SYN, 21);
    const synOut = client.queue.deliver(syn2, 'egress');
    const renewed = (await agent(domain, 'web', 'frontend', clock)).local;
    client.verifier.reconfigure(renewed.bundles, { kex: renewed.kex, kexRaw: renewed.kexRaw });
    client.handler.useIdentity(renewed);
    assert.equal(server.queue.deliver(synOut.bytes, 'ingress').dropped, false);
    const synAckIn = client.queue.deliver(server.queue.deliver(onPort(SYN_ACK, 23), 'egress').bytes, 'ingress');
    assert.equal(synAckIn.dropped, false, `SYN-ACK accepted (${client.events.at(-1)?.reason ?? ''})`);
    // Nothing learned under the old key is kept: the next SYN is a signed first contact under the new one.
    const next = synMessage(client.queue.deliver(onPort(SYN, 21, 0x98), 'egress').bytes);
    assert.ok(next.signature !== null && next.proof === null);
  });

  it('a server that rotated its keys between the SYN and its SYN-ACK answers under the keys it judged the SYN with', async () => {
    const synIn = server.queue.deliver(client.queue.deliver(SYN, 'egress').bytes, 'ingress');
    assert.equal(synIn.dropped, false);
    const renewed = (await agent(domain, 'api', 'backend', clock)).local;
    server.verifier.reconfigure(renewed.bundles, { kex: renewed.kex, kexRaw: renewed.kexRaw });
    server.handler.useIdentity(renewed);
    const synAckIn = client.queue.deliver(server.queue.deliver(SYN_ACK, 'egress').bytes, 'ingress');
    assert.equal(synAckIn.dropped, false, `SYN-ACK accepted (${client.events.at(-1)?.reason ?? ''})`);
    assert.equal(server.queue.deliver(client.queue.deliver(ACK, 'egress').bytes, 'ingress').released, true);
  });

  it('a server restarted with new keys drops a fast SYN; its retransmit is signed and the full handshake completes', async () => {
    completeFirstContact();
    const restarted = await agent(domain, 'api', 'backend', clock);
    const syn2 = onPort(SYN, 21);
    const fastSyn = client.queue.deliver(syn2, 'egress');
    assert.ok(synMessage(fastSyn.bytes).proof !== null);
    reasonOf(restarted.queue.deliver(fastSyn.bytes, 'ingress'), restarted.queue, 'unproven-syn');
    const retransmit = client.queue.deliver(syn2, 'egress');
    assert.ok(synMessage(retransmit.bytes).signature !== null, 'the retransmit is signed');
    assert.equal(restarted.queue.deliver(retransmit.bytes, 'ingress').dropped, false);
    const synAckIn = client.queue.deliver(restarted.queue.deliver(onPort(SYN_ACK, 23), 'egress').bytes, 'ingress');
    assert.equal(synAckIn.dropped, false);
    assert.equal(synAckIn.released, false, 'not the fast path: the new key needs the ACK proof');
    const ackIn = restarted.queue.deliver(client.queue.deliver(onPort(ACK, 21), 'egress').bytes, 'ingress');
    assert.equal(ackIn.dropped, false);
    assert.equal(ackIn.released, true);
  });

  it('a client behind a source NAT: the SYN-ACK to the NAT\'s address finds the handshake by the server\'s address and port and the ISN; one acknowledging another ISN does not', () => {
    /** The SYN-ACK as it reaches the client's agent before netfilter undoes the NAT: to 10.213.9.9:40000. */
    const toNat = (bytes: Uint8Array, acknowledgment?: number) => {
      const out = Uint8Array.from(bytes);
      const view = Buffer.from(out.buffer, out.byteOffset, out.length);
      view.set([10, 213, 9, 9], 16);
      view.writeUInt16BE(40000, 22);
      if (acknowledgment !== undefined) view.writeUInt32BE(acknowledgment, 28);
      return fixChecksums(out, 4, 20);
    };
    const synIn = server.queue.deliver(client.queue.deliver(SYN, 'egress').bytes, 'ingress');
    assert.equal(synIn.dropped, false);
    const synAckOut = server.queue.deliver(SYN_ACK, 'egress');
    const stray = client.queue.deliver(toNat(synAckOut.bytes, parsed(SYN_ACK).acknowledgment + 1), 'ingress');
    reasonOf(stray, client.queue, 'unknown-flow');
    const synAckIn = client.queue.deliver(toNat(synAckOut.bytes), 'ingress');
    assert.equal(synAckIn.dropped, false);
    assert.equal(client.events.at(-1)?.peer, 'spiffe://hs.synpass/api');
    // The ACK leaves before the NAT, from the socket's address: it carries the client's proof.
    const ackIn = server.queue.deliver(client.queue.deliver(ACK, 'egress').bytes, 'ingress');
    assert.deepEqual([ackIn.dropped, ackIn.released], [false, true]);
  });

  it('a server without agent: the answer to a SYN in progress is released; one acknowledging another ISN, or arriving after the handshake timed out, is dropped (unknown-flow), and the retransmitted SYN opens the handshake again', () => {
    /** The server's SYN-ACK as a host without agent sends it: no token. */
    const plainAnswer = (acknowledgment = parsed(SYN_ACK).acknowledgment) => {
      const out = Uint8Array.from(SYN_ACK);
      Buffer.from(out.buffer, out.byteOffset, out.length).writeUInt32BE(acknowledgment, 28);
      return fixChecksums(out, 4, 20);
    };
    client.queue.deliver(SYN, 'egress');
    reasonOf(client.queue.deliver(plainAnswer(parsed(SYN_ACK).acknowledgment + 1), 'ingress'), client.queue, 'unknown-flow');
    // Past handshake.timeoutSeconds the record is gone: the answer would be judged for no workload.
    time += 31_000;
    reasonOf(client.queue.deliver(plainAnswer(), 'ingress'), client.queue, 'unknown-flow');
    client.queue.deliver(SYN, 'egress');
    const answered = client.queue.deliver(plainAnswer(), 'ingress');
    assert.deepEqual([answered.dropped, answered.released, client.events.at(-1)?.reason], [false, true, 'peer-without-agent']);
  });

  it('a retransmitted SYN is accepted; the same SYN replayed after the handshake is refused', () => {
    const synOut = client.queue.deliver(SYN, 'egress');
    assert.equal(server.queue.deliver(synOut.bytes, 'ingress').dropped, false);
    const retransmit = client.queue.deliver(SYN, 'egress');
    assert.deepEqual(retransmit.bytes, synOut.bytes, 'the client repeats the same message');
    assert.equal(server.queue.deliver(retransmit.bytes, 'ingress').dropped, false);
    const synAckIn = client.queue.deliver(server.queue.deliver(SYN_ACK, 'egress').bytes, 'ingress');
    assert.equal(synAckIn.dropped, false);
    server.queue.deliver(client.queue.deliver(ACK, 'egress').bytes, 'ingress');
    reasonOf(server.queue.deliver(synOut.bytes, 'ingress'), server.queue, 'replayed-syn');
  });

  it('refuses a SYN outside the timestamp window', () => {
    const synOut = client.queue.deliver(SYN, 'egress');
    time += 31_000;
    reasonOf(server.queue.deliver(synOut.bytes, 'ingress'), server.queue, 'stale-timestamp');
  });

  it('the client refuses a SYN-ACK whose proof or nonce was tampered with', () => {
    const { synAckOut } = handshake();
    // The body ends nonce[16] | proof[16]: -1 hits the proof, -20 the server nonce.
    for (const offset of [-1, -20]) {
      const tampered = withBody(synAckOut.bytes, (body) => {
        const copy = Buffer.from(body);
        copy[copy.length + offset] = copy[copy.length + offset]! ^ 0x01;
        return copy;
      });
      reasonOf(client.queue.deliver(tampered, 'ingress'), client.queue, 'bad-proof');
    }
  });

  it('the server refuses an ACK with a tampered proof, then a replayed ACK', () => {
    handshake();
    const ackOut = client.queue.deliver(ACK, 'egress');
    const tampered = withBody(ackOut.bytes, (body) => {
      const copy = Buffer.from(body);
      copy[copy.length - 1] = copy[copy.length - 1]! ^ 0x80;
      return copy;
    });
    reasonOf(server.queue.deliver(tampered, 'ingress'), server.queue, 'bad-proof');
    assert.equal(server.queue.deliver(ackOut.bytes, 'ingress').dropped, false);
    reasonOf(server.queue.deliver(ackOut.bytes, 'ingress'), server.queue, 'replayed-ack');
  });

  it('delivers a FIN that raced the release with the proof, but never a repeated bare ACK', () => {
    completeFirstContact();
    // A client that closes at once: its FIN leaves before the ACK's release verdict lands.
    const finOut = client.queue.deliver(FIN_ACK, 'egress');
    assert.ok(finOut.bytes.length > ACK.length, 'the raced FIN carries the proof');
    const finIn = server.queue.deliver(finOut.bytes, 'ingress');
    assert.equal(finIn.dropped, false);
    assert.equal(finIn.released, true);
    assert.deepEqual(finIn.bytes, FIN_ACK, 'the proof is stripped before TCP sees it');
    reasonOf(server.queue.deliver(client.queue.deliver(ACK, 'egress').bytes, 'ingress'), server.queue, 'replayed-ack');
  });

  it('a segment that overtook the proof ACK waits in the queue for it, then follows it through', () => {
    handshake();
    // Sent after the client released the connection: no proof, and it arrives first.
    const early = server.queue.deliver(FIN_ACK, 'ingress');
    assert.equal(early.held, true, 'no verdict yet');
    const ackIn = server.queue.deliver(client.queue.deliver(ACK, 'egress').bytes, 'ingress');
    assert.equal(ackIn.released, true);
    const settled = server.queue.verdictOf(early.id);
    assert.equal(settled.held, false);
    assert.equal(settled.dropped, false);
    assert.equal(settled.released, true);
    assert.deepEqual(settled.bytes, FIN_ACK, 'accepted as it came');
  });

  it('a held segment is dropped when no proof comes in time (no-identity) or the proof is bad (bad-proof)', async () => {
    handshake();
    const lonely = server.queue.deliver(ACK, 'ingress');
    assert.equal(lonely.held, true);
    await new Promise((resolve) => setTimeout(resolve, 150));
    assert.equal(server.queue.verdictOf(lonely.id).dropped, true);
    assert.equal(server.queue.engine.verdicts.get('ingress', 'drop', 'no-identity'), 1);

    const { synAckOut } = handshake(client, outsiderAgent);
    assert.equal(synAckOut.dropped, false);
    const waiting = outsiderAgent.queue.deliver(ACK, 'ingress');
    assert.equal(waiting.held, true);
    const tampered = withBody(client.queue.deliver(ACK, 'egress').bytes, (body) => {
      const copy = Buffer.from(body);
      copy[copy.length - 1] = copy[copy.length - 1]! ^ 0x80;
      return copy;
    });
    reasonOf(outsiderAgent.queue.deliver(tampered, 'ingress'), outsiderAgent.queue, 'bad-proof');
    assert.equal(outsiderAgent.queue.verdictOf(waiting.id).dropped, true, 'the held segment goes with it');
    assert.equal(outsiderAgent.queue.engine.verdicts.get('ingress', 'drop', 'bad-proof'), 2);
  });

  it('holds at most four segments per pending handshake; more are dropped at once', () => {
    handshake();
    const held = [1, 2, 3, 4].map(() => server.queue.deliver(ACK, 'ingress'));
    assert.ok(held.every((v) => v.held));
    reasonOf(server.queue.deliver(ACK, 'ingress'), server.queue, 'no-identity');
    server.queue.deliver(client.queue.deliver(ACK, 'egress').bytes, 'ingress');
    assert.ok(held.every((v) => !server.queue.verdictOf(v.id).held && !server.queue.verdictOf(v.id).dropped));
  });

  it('refuses an ACK proof with no handshake behind it', () => {
    const ack = encodeMessage({ type: MessageType.Ack, proof: new Uint8Array(16) });
    const out = new Uint8Array(2048);
    const length = attachToken(parsed(ACK), ack, ack.length, out, 1500);
    reasonOf(server.queue.deliver(out.slice(0, length), 'ingress'), server.queue, 'replayed-ack');
  });

  it('a known-peer SYN with a tampered nonce is refused by its proof', () => {
    completeFirstContact();
    const syn2 = Uint8Array.from(SYN);
    syn2[21] = 0x98;
    const fastSyn = client.queue.deliver(withValidChecksums(syn2), 'egress');
    const tampered = withBody(fastSyn.bytes, (body) => {
      const message = decodeMessage(body);
      assert.equal(message.type, MessageType.Syn);
      if (message.type !== MessageType.Syn) return body;
      const nonce = Buffer.from(message.nonce);
      nonce[0] = nonce[0]! ^ 0x01;
      return encodeMessage({ ...message, nonce });
    });
    reasonOf(server.queue.deliver(tampered, 'ingress'), server.queue, 'bad-proof');
  });

  /** The message of `bytes` with its token replaced by the one `donor` carries. */
  function withTokenOf(bytes: Uint8Array, donor: Uint8Array): Uint8Array {
    const donated = decodeMessage(bodyOf(donor));
    if (donated.type === MessageType.Ack) throw new Error('an ACK carries no token');
    return withBody(bytes, (body) => {
      const message = decodeMessage(body);
      if (message.type === MessageType.Ack) throw new Error('an ACK carries no token');
      return encodeMessage({ ...message, token: donated.token });
    });
  }

  it('a known-peer SYN whose token an on-path party swapped for another workload of the same agent is refused by its proof', async () => {
    const batch = batchWorkload();
    const multi = await agent(domain, 'web-multi', 'frontend', clock, [batch]);
    // First contact as the admitted host workload; its SYN is the donor of an admitted token.
    const admittedSyn = multi.queue.deliver(SYN, 'egress', 0, 0);
    server.queue.deliver(admittedSyn.bytes, 'ingress');
    multi.queue.deliver(server.queue.deliver(SYN_ACK, 'egress').bytes, 'ingress');
    server.queue.deliver(multi.queue.deliver(ACK, 'egress', 0, 0).bytes, 'ingress');
    // batch (uid 1234) is refused as itself on the fast path...
    const batchSyn = multi.queue.deliver(onPort(SYN, 21, 0x97), 'egress', 0, 1234);
    assert.equal(synMessage(batchSyn.bytes).proof !== null, true, 'the pair is known: the SYN carries a proof');
    reasonOf(server.queue.deliver(batchSyn.bytes, 'ingress'), server.queue, 'not-allowed');
    // ...and its next fresh, correctly proved SYN wearing the admitted workload's token is refused too.
    const swapped = withTokenOf(multi.queue.deliver(onPort(SYN, 21, 0x98), 'egress', 0, 1234).bytes, admittedSyn.bytes);
    reasonOf(server.queue.deliver(swapped, 'ingress'), server.queue, 'bad-proof');
    assert.equal(server.events.at(-1)?.peer, 'spiffe://hs.synpass/web-multi', 'the log names the identity the token claimed');
  });

  it('the client refuses a SYN-ACK whose token was swapped for another workload of the same server agent', async () => {
    const db: WorkloadIdentity = { name: 'db', subject: 'spiffe://hs.synpass/db', uids: [], cgroups: [], ports: [7000], attestors: [] };
    const dbServer = await agent(domain, 'dbhost', 'backend', clock, [db]);
    // The donor: dbhost answering on another port, as its host workload.
    const otherSyn = client.queue.deliver(onPort(SYN, 23, 0x59), 'egress');
    dbServer.queue.deliver(otherSyn.bytes, 'ingress');
    const hostSynAck = dbServer.queue.deliver(onPort(SYN_ACK, 21, 0x59), 'egress');
    // First contact to port 7000 (db), then the same with the SYN-ACK's token swapped.
    const synIn = dbServer.queue.deliver(client.queue.deliver(SYN, 'egress').bytes, 'ingress');
    assert.equal(synIn.dropped, false);
    const dbSynAck = dbServer.queue.deliver(SYN_ACK, 'egress');
    reasonOf(client.queue.deliver(withTokenOf(dbSynAck.bytes, hostSynAck.bytes), 'ingress'), client.queue, 'bad-proof');
    // The untouched SYN-ACK still passes: only the swap was refused.
    assert.equal(client.queue.deliver(dbSynAck.bytes, 'ingress').dropped, false);
    assert.equal(client.events.at(-1)?.peer, 'spiffe://hs.synpass/db');
  });

  it('drops a body of another protocol version under its own reason (a mixed-version rollout shows as such)', () => {
    const synOut = client.queue.deliver(SYN, 'egress');
    assert.equal(bodyOf(synOut.bytes)[0], 3);
    const versionTwo = withBody(synOut.bytes, (body) => Buffer.from(body).fill(2, 0, 1));
    reasonOf(server.queue.deliver(versionTwo, 'ingress'), server.queue, 'unsupported-version');
    assert.equal(server.queue.deliver(synOut.bytes, 'ingress').dropped, false, 'the same SYN at version 3 passes');
  });

  it('cloaks a SYN without identity on a protected port, admits listed networks and unprotected ports', () => {
    reasonOf(server.queue.deliver(SYN, 'ingress'), server.queue, 'no-identity');
    const fromListed = Uint8Array.from(SYN);
    fromListed.set([10, 99, 1, 1], 12);
    const listed = server.queue.deliver(withValidChecksums(fromListed), 'ingress');
    assert.equal(listed.dropped, false);
    assert.equal(listed.released, true);
    const otherPort = Uint8Array.from(SYN);
    otherPort[23] = 0x59; // 7001
    const unprotected = server.queue.deliver(withValidChecksums(otherPort), 'ingress');
    assert.equal(unprotected.released, true);
    assert.equal(server.events.at(-1)?.reason, 'unprotected-port');
  });

  /**
   * A kernel path that records what the handshake tells it, admits what its flag says, and names
   * `workload` as the cgroup workload of every connection it is asked about.
   */
  function recordingKernelPath(admits = true, workload = 0) {
    const told = { admitted: [] as AdmittedClient[], servers: [] as FastServer[], reauthorized: 0, localAt: null as LocalWorkloadAt | null, forgotten: 0, forgottenOwn: 0, retiredUntil: [] as number[], closed: [] as number[], asked: [] as string[], answered: [] as [number, boolean][], podTokens: [] as ((address: string) => Uint8Array | undefined)[], unvouched: [] as string[], pairs: [] as PodPair[], routes: [] as ServiceRoute[] };
    const path: KernelPath = {
      takeConnectionWorkload: (localAddress, localPort, isn) => {
        told.asked.push(`${localAddress}:${localPort} isn ${isn}`);
        return workload;
      },
      admitClient: (entry) => {
        told.admitted.push(entry);
        return admits;
      },
      listenerAnswered: (port, ready) => {
        told.answered.push([port, ready]);
      },
      useServer: (entry) => {
        told.servers.push(entry);
        return admits;
      },
      admitPodPair: (pair) => {
        told.pairs.push(pair);
        return admits;
      },
      deferServiceRoute: (route) => {
        told.routes.push(route);
        return admits;
      },
      reauthorize: (_authorizer, localAt) => {
        told.reauthorized += 1;
        told.localAt = localAt;
      },
      retire: (untilSeconds) => {
        told.retiredUntil.push(untilSeconds);
      },
      forgetAll: () => {
        told.forgotten += 1;
      },
      forgetOwnWorkloads: () => {
        told.forgottenOwn += 1;
      },
      podTokensChanged: (tokenSignatureAt) => {
        told.podTokens.push(tokenSignatureAt);
      },
      podUnvouched: (address) => {
        told.unvouched.push(address);
      },
      cloak: (closed) => {
        told.closed = [7000, 7001, 8080].filter((port) => closed(port));
      },
    };
    return { path, told };
  }

  /** The SYN-ACK as a listener whose kernel signs answers to fast SYNs writes it (the ready option last). */
  function withKernelReady(bytes: Uint8Array): Uint8Array {
    const packet = parsed(bytes);
    const headerEnd = packet.tcpOffset + packet.tcpHeaderLength;
    const out = new Uint8Array(bytes.length + 4);
    out.set(bytes.subarray(0, headerEnd));
    out.set([254, 4, 0xd3, 0x52], headerEnd);
    out.set(bytes.subarray(headerEnd), headerEnd + 4);
    out[packet.tcpOffset + 12] = ((packet.tcpHeaderLength + 4) / 4) << 4;
    new DataView(out.buffer).setUint16(2, out.length);
    return fixChecksums(out, 4, packet.tcpOffset);
  }
  const READY_SYN_ACK = withKernelReady(SYN_ACK);

  it('parses the ready option of a listener whose kernel signs', () => {
    assert.equal(parsed(READY_SYN_ACK).kernelReady, true);
    assert.equal(parsed(SYN_ACK).kernelReady, false);
  });

  it('a first contact hands the proven client workload to both kernels under the same fast key', async () => {
    const serverKernel = recordingKernelPath();
    const clientKernel = recordingKernelPath();
    server.handler.useKernelPath(serverKernel.path);
    client.handler.useKernelPath(clientKernel.path);
    const synOut = client.queue.deliver(SYN, 'egress', 0, 4321);
    server.queue.deliver(synOut.bytes, 'ingress');
    const synAckOut = server.queue.deliver(READY_SYN_ACK, 'egress');
    assert.equal(decodeMessage(bodyOf(synAckOut.bytes)).type, MessageType.SynAck);
    assert.equal((decodeMessage(bodyOf(synAckOut.bytes)) as { flags: number }).flags & FLAG_KERNEL, FLAG_KERNEL);
    client.queue.deliver(synAckOut.bytes, 'ingress');
    const [admitted] = serverKernel.told.admitted;
    const [learned] = clientKernel.told.servers;
    assert.ok(admitted && learned);
    assert.deepEqual(serverKernel.told.answered, [[7000, true]]);
    assert.deepEqual([admitted.peerAddress, admitted.port, admitted.peer.subject], ['10.213.5.1', 7000, 'spiffe://hs.synpass/web']);
    assert.deepEqual([learned.serverAddress, learned.port, learned.owner, learned.peer.subject], ['10.213.5.2', 7000, { uid: 4321, workload: 0 }, 'spiffe://hs.synpass/api']);
    assert.equal(admitted.fast.fastId, learned.fast.fastId);
    assert.deepEqual(admitted.fast.key, learned.fast.key);
    assert.ok(admitted.expiresAt > time / 1000 && learned.expiresAt > time / 1000);
    // Flushed caches empty the kernel: every pair starts again with first contact. A reload that
    // keeps the key only stops the kernel proving this agent's own workloads.
    client.handler.forgetServers();
    assert.equal(clientKernel.told.forgotten, 1);
    client.handler.useIdentity(client.local);
    assert.deepEqual([clientKernel.told.forgotten, clientKernel.told.forgottenOwn], [1, 1]);
    // New keys (a renewal): what peers proved under the old ones holds until the old credential
    // expires, not a moment longer; nothing is forgotten outright.
    const previous = server.local.credential.expiresAt;
    server.handler.useIdentity((await agent(domain, 'api', 'backend', clock)).local);
    assert.deepEqual([serverKernel.told.retiredUntil, serverKernel.told.forgotten], [[previous], 0]);
  });

  it('a restart restores the saved tables under the same fast keys, each entry checked as a first contact would check it now', () => {
    const serverKernel = recordingKernelPath();
    const clientKernel = recordingKernelPath();
    server.handler.useKernelPath(serverKernel.path);
    client.handler.useKernelPath(clientKernel.path);
    server.queue.deliver(client.queue.deliver(SYN, 'egress', 0, 4321).bytes, 'ingress');
    client.queue.deliver(server.queue.deliver(READY_SYN_ACK, 'egress').bytes, 'ingress');
    const [admitted] = serverKernel.told.admitted;
    const [learned] = clientKernel.told.servers;
    assert.ok(admitted && learned);
    const serverToSave = ({ peerAddress, localAddress, port, credential, tokenSignature, peer, expiresAt }: AdmittedClient): ServerToSave => ({ peerAddress, localAddress, port, credential: credential.compact, tokenSignature, peer, expiresAt });
    const clientToSave = ({ serverAddress, port, owner, credential, tokenSignature, peer, local, expiresAt }: FastServer): ClientToSave => ({ serverAddress, port, owner, credential: credential.compact, tokenSignature, peer, local, expiresAt });
    const file = encodeSavedTables(server.local.kexRaw, [serverToSave(admitted), serverToSave(admitted)], []);
    const clientFile = encodeSavedTables(client.local.kexRaw, [], [clientToSave(learned)]);
    assert.ok(!file.includes(admitted.fast.key.toString('base64url')) && !clientFile.includes(learned.fast.key.toString('base64url')), 'no key in the files');
    const saved = () => decodeSavedTables(file, 'saved.json');
    assert.equal(saved().credentials.length, 1, 'a credential is written once');
    // The same agents (same key-agreement keys), started again: the same keys and ids come back.
    const restarted = recordingKernelPath();
    server.handler.useKernelPath(restarted.path);
    const none = { restored: 0, skipped: {} };
    assert.deepEqual(server.handler.restoreKernelTables(saved()), { servers: { restored: 2, skipped: {} }, clients: none, retiring: none });
    const [restored] = restarted.told.admitted;
    // The entry holds for the address the SYN was sent to (the host's here; a pod's on a node).
    assert.equal(admitted.localAddress, '10.213.5.2');
    assert.deepEqual([restored?.fast, restored?.peer, restored?.port, restored?.peerAddress, restored?.localAddress], [admitted.fast, admitted.peer, admitted.port, admitted.peerAddress, admitted.localAddress]);
    // A file of a run before entries named their local address: those are not restored.
    assert.deepEqual(server.handler.restoreKernelTables(decodeSavedTables(file.replaceAll('"localAddress":"10.213.5.2",', ''), 'old.json')).servers, { restored: 0, skipped: { 'no-local-address': 2 } });
    const clientRestarted = recordingKernelPath();
    client.handler.useKernelPath(clientRestarted.path);
    assert.deepEqual(client.handler.restoreKernelTables(decodeSavedTables(clientFile, 'client.json')), { servers: none, clients: { restored: 1, skipped: {} }, retiring: none });
    const [relearned] = clientRestarted.told.servers;
    assert.deepEqual([relearned?.fast, relearned?.peer, relearned?.owner, relearned?.serverAddress, relearned?.port], [learned.fast, learned.peer, learned.owner, learned.serverAddress, learned.port]);
    // A file from before client tables were kept has none.
    assert.deepEqual(decodeSavedTables(file.replace(',"clients":[]', ''), 'old.json').clients, []);
    // The owner is another workload now (its attributes changed): the server holds the old one.
    const changed = decodeSavedTables(clientFile, 'client.json');
    (changed.clients[0]!.local as Record<string, string>)['app.tier'] = 'other';
    assert.deepEqual(client.handler.restoreKernelTables(changed).clients, { restored: 0, skipped: { 'workload-changed': 1 } });
    // Another agent's key derives other keys: nothing.
    assert.deepEqual(client.handler.restoreKernelTables(saved()), { servers: { restored: 0, skipped: { 'keys-changed': 2 } }, clients: none, retiring: none });
    assert.deepEqual(server.handler.restoreKernelTables(decodeSavedTables(clientFile, 'client.json')).clients, { restored: 0, skipped: { 'keys-changed': 1 } });
    // An identity that claims another agent than the credential's.
    const forged = saved();
    forged.entries[0]!.peer = { ...forged.entries[0]!.peer, agent: 'spiffe://hs.synpass/agent/other' };
    assert.deepEqual(server.handler.restoreKernelTables(forged).servers, { restored: 1, skipped: { 'agent-mismatch': 1 } });
    // Today's policy, deny list and clock decide, not the previous run's.
    server.handler.useAuthorizer(new AdmissionAuthorizer(new Admission({ protectedPorts: [7000], allow: [], allowWithoutIdentity: [] })));
    assert.deepEqual(server.handler.restoreKernelTables(saved()).servers, { restored: 0, skipped: { 'not-allowed': 2 } });
    server.handler.useAuthorizer(new AdmissionAuthorizer(new Admission(admission)));
    server.verifier.denyList = { credentials: new Set(), keys: new Set([admitted.credential.signKid]), revision: 'test' };
    assert.deepEqual(server.handler.restoreKernelTables(saved()).servers, { restored: 0, skipped: { 'revoked-credential': 2 } });
    server.verifier.denyList = { credentials: new Set(), keys: new Set(), revision: 'none' };
    time = (Math.max(admitted.expiresAt, learned.expiresAt) + 1) * 1000;
    const expired = server.handler.restoreKernelTables(saved()).servers;
    assert.equal(expired.restored, 0);
    assert.deepEqual(Object.keys(expired.skipped), [admitted.expiresAt === admitted.credential.expiresAt ? 'expired-credential' : 'expired']);
    assert.equal(client.handler.restoreKernelTables(decodeSavedTables(clientFile, 'client.json')).clients.restored, 0);
    assert.throws(() => decodeSavedTables(file.replace('"credential":0', '"credential":5'), 'saved.json'), /saved\.json: an entry names a credential the file does not hold/);
    assert.throws(() => decodeSavedTables('{', 'saved.json'), /saved\.json: not JSON/);
  });

  it('a restart after a rotation: what peers proved under the previous key comes back retiring, under the same fast keys, and that key\'s SYN proofs are honoured again until it ends', async () => {
    const serverKernel = recordingKernelPath();
    server.handler.useKernelPath(serverKernel.path);
    client.handler.useKernelPath(recordingKernelPath().path);
    server.queue.deliver(client.queue.deliver(SYN, 'egress', 0, 4321).bytes, 'ingress');
    client.queue.deliver(server.queue.deliver(READY_SYN_ACK, 'egress').bytes, 'ingress');
    const [admitted] = serverKernel.told.admitted;
    assert.ok(admitted);
    const until = server.local.credential.expiresAt;
    assert.equal(server.handler.previousKeyToKeep(), null, 'no rotation yet');
    const rotated = (await agent(domain, 'api', 'backend', clock)).local;
    server.verifier.reconfigure(rotated.bundles, { kex: rotated.kex, kexRaw: rotated.kexRaw });
    server.handler.useIdentity(rotated);
    const previous = server.handler.previousKeyToKeep();
    assert.ok(previous !== null);
    assert.equal(previous.untilSeconds, until);
    const retiringEntry: ServerToSave = { ...admitted, credential: admitted.credential.compact };
    const file = encodeSavedTables(rotated.kexRaw, [], [], { ...previous, servers: [retiringEntry] });
    const saved = () => decodeSavedTables(file, 'saved.json');
    // The same agent started again: its current key from its key file, its previous one from the saved file.
    const again = restarted(rotated, 'backend', clock);
    const kernel = recordingKernelPath();
    again.handler.useKernelPath(kernel.path);
    const none = { restored: 0, skipped: {} };
    assert.deepEqual(again.handler.restoreKernelTables(saved()), { servers: none, clients: none, retiring: { restored: 1, skipped: {} } });
    const [back] = kernel.told.admitted;
    assert.deepEqual([back?.fast, back?.peer, back?.localAddress, back?.port], [admitted.fast, admitted.peer, admitted.localAddress, admitted.port], 'the fast key web\'s kernel holds');
    assert.ok(back !== undefined && back.expiresAt <= until, 'not past the previous key');
    assert.deepEqual(kernel.told.retiredUntil, [until], 'retiring: its SYN-ACKs tell web to learn the new key');
    assert.equal(again.handler.previousKeyToKeep()?.untilSeconds, until, 'kept again at the next stop');
    // web still holds a pair key under the previous key: its next SYN, proved to that key, is taken at once.
    const proved = client.queue.deliver(onPort(SYN, 21), 'egress');
    assert.ok(synMessage(proved.bytes).proof !== null && synMessage(proved.bytes).signature === null, 'proved to the previous key, unsigned');
    assert.equal(again.queue.deliver(proved.bytes, 'ingress').dropped, false, 'no retransmission needed');
    // Without the previous key (a file of an earlier run) the same SYN had waited for its signed retransmit.
    const earlier = restarted(rotated, 'backend', clock);
    earlier.handler.useKernelPath(recordingKernelPath().path);
    const withoutKey = saved();
    delete withoutKey.retiring;
    assert.deepEqual(earlier.handler.restoreKernelTables(withoutKey).retiring, none);
    reasonOf(earlier.queue.deliver(client.queue.deliver(onPort(SYN, 21, 0x99), 'egress').bytes, 'ingress'), earlier.queue, 'unproven-syn');
    // A key that does not read, or is not an X25519 one, brings nothing back.
    const broken = saved();
    broken.retiring = { ...broken.retiring!, privateKey: broken.retiring!.privateKey.slice(4) };
    const brokenRun = restarted(rotated, 'backend', clock);
    brokenRun.handler.useKernelPath(recordingKernelPath().path);
    assert.deepEqual(brokenRun.handler.restoreKernelTables(broken).retiring, { restored: 0, skipped: { 'bad-previous-key': 1 } });
    assert.equal(brokenRun.handler.previousKeyToKeep(), null);
    // Once the previous key has ended, nothing of it comes back.
    time = (until + 1) * 1000;
    const late = restarted(rotated, 'backend', clock);
    late.handler.useKernelPath(recordingKernelPath().path);
    assert.deepEqual(late.handler.restoreKernelTables(saved()).retiring, { restored: 0, skipped: { expired: 1 } });
    assert.equal(late.handler.previousKeyToKeep(), null);
  });

  it('a server kernel that refuses the entry leaves the SYN-ACK without the kernel flag, and the client kernel untold', () => {
    const serverKernel = recordingKernelPath(false);
    const clientKernel = recordingKernelPath();
    server.handler.useKernelPath(serverKernel.path);
    client.handler.useKernelPath(clientKernel.path);
    server.queue.deliver(client.queue.deliver(SYN, 'egress', 0, 4321).bytes, 'ingress');
    const synAckOut = server.queue.deliver(READY_SYN_ACK, 'egress');
    client.queue.deliver(synAckOut.bytes, 'ingress');
    assert.equal((decodeMessage(bodyOf(synAckOut.bytes)) as { flags: number }).flags & FLAG_KERNEL, 0);
    assert.equal(serverKernel.told.admitted.length, 1);
    assert.equal(clientKernel.told.servers.length, 0);
  });

  it('a listener opened before the programs (no ready option in its SYN-ACK) keeps the pair on the queue', () => {
    const serverKernel = recordingKernelPath();
    const clientKernel = recordingKernelPath();
    server.handler.useKernelPath(serverKernel.path);
    client.handler.useKernelPath(clientKernel.path);
    const { synAckOut } = handshake();
    assert.equal((decodeMessage(bodyOf(synAckOut.bytes)) as { flags: number }).flags & FLAG_KERNEL, 0);
    assert.deepEqual([serverKernel.told.admitted.length, clientKernel.told.servers.length], [0, 0]);
    // The kernel path hears of the listener, so status can name the port.
    assert.deepEqual(serverKernel.told.answered, [[7000, false]]);
  });

  it('an identity admission refuses is never handed to the kernel', () => {
    const serverKernel = recordingKernelPath();
    server.handler.useKernelPath(serverKernel.path);
    const synOut = outsiderAgent.queue.deliver(SYN, 'egress');
    reasonOf(server.queue.deliver(synOut.bytes, 'ingress'), server.queue, 'not-allowed');
    assert.equal(serverKernel.told.admitted.length, 0);
    server.handler.policyChanged();
    assert.equal(serverKernel.told.reauthorized, 1);
  });

  it('pod changes judge the kernel\'s entries again for the workload at each address now: at once, then at most once a second, and once after a burst', (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const serverKernel = recordingKernelPath();
    server.handler.useKernelPath(serverKernel.path);
    server.handler.localPodsChanged();
    assert.equal(serverKernel.told.reauthorized, 1);
    // No pod holds the address: the host's workload for the port.
    assert.deepEqual(serverKernel.told.localAt?.('10.213.5.2', 7000), server.local.tokenForPort(7000).localAttributes);
    server.handler.localPodsChanged();
    server.handler.localPodsChanged();
    time += 400;
    t.mock.timers.tick(400);
    assert.equal(serverKernel.told.reauthorized, 1, 'a burst waits out the second');
    time += 600;
    t.mock.timers.tick(600);
    assert.equal(serverKernel.told.reauthorized, 2, 'then one walk for all of it');
    time += 5000;
    server.handler.localPodsChanged();
    assert.equal(serverKernel.told.reauthorized, 3, 'a change after a quiet second goes at once');
  });

  it('tells the kernel which ports refuse every peer without identity', () => {
    const serverKernel = recordingKernelPath();
    server.handler.useKernelPath(serverKernel.path);
    // Admission protects 7000 but lets 10.99.0.0/16 reach it without identity: not closed.
    assert.deepEqual(serverKernel.told.closed, []);
    server.handler.useAuthorizer(new AdmissionAuthorizer(new Admission({ protectedPorts: [7000, 8080], allow: [], allowWithoutIdentity: [{ cidr: '10.99.0.0/16', ports: [7000] }] })));
    assert.deepEqual(serverKernel.told.closed, [8080]);
  });

  it('refuses a verified identity that admission does not name', () => {
    const synOut = outsiderAgent.queue.deliver(SYN, 'egress');
    reasonOf(server.queue.deliver(synOut.bytes, 'ingress'), server.queue, 'not-allowed');
  });

  it('refuses a truncated handshake body and a valid token glued to another credential', () => {
    const synOut = client.queue.deliver(SYN, 'egress');
    const truncated = withBody(synOut.bytes, (body) => body.subarray(0, body.length - 30));
    reasonOf(server.queue.deliver(truncated, 'ingress'), server.queue, 'malformed-handshake');
    const glued = withBody(synOut.bytes, (body) => {
      const message = decodeMessage(body);
      if (message.type !== MessageType.Syn) return body;
      const foreign = parsed(outsiderAgent.queue.deliver(SYN, 'egress').bytes);
      const other = decodeMessage(foreign.buf.subarray(foreign.tokenOffset, foreign.tokenOffset + foreign.tokenLength));
      return encodeMessage({ ...message, credential: other.type === MessageType.Syn ? other.credential : message.credential });
    });
    reasonOf(server.queue.deliver(glued, 'ingress'), server.queue, 'token-credential-mismatch');
  });

  it('picks the workload identity by socket owner on the client and by local port on the server', async () => {
    const batch = batchWorkload(new ProcessAttestor([1234]));
    const db: WorkloadIdentity = { name: 'db', subject: 'spiffe://hs.synpass/db', uids: [], cgroups: [], ports: [7000], attestors: [] };
    const multi = await agent(domain, 'web-multi', 'frontend', clock, [batch]);
    const dbServer = await agent(domain, 'dbhost', 'backend', clock, [db]);
    // uid 1234 -> batch, which admission does not name: refused, and the log knows who it was.
    const refused = server.queue.deliver(multi.queue.deliver(SYN, 'egress', 0, 1234).bytes, 'ingress');
    assert.equal(refused.dropped, true);
    assert.equal(server.events.at(-1)?.reason, 'not-allowed');
    assert.equal(server.events.at(-1)?.peer, 'spiffe://hs.synpass/batch');
    // Any other owner -> the host default workload (frontend), admitted; the server answers as db.
    // (Same ISN on another port: a new connection, not a retransmit of the first.)
    const otherPort = Uint8Array.from(SYN);
    otherPort[21] = 0x99;
    const synIn = dbServer.queue.deliver(multi.queue.deliver(withValidChecksums(otherPort), 'egress', 0, 0).bytes, 'ingress');
    assert.equal(synIn.dropped, false);
    assert.equal(dbServer.events.at(-1)?.peer, 'spiffe://hs.synpass/web-multi');
    const synAck = Uint8Array.from(SYN_ACK);
    synAck[23] = 0x99;
    const synAckIn = multi.queue.deliver(dbServer.queue.deliver(withValidChecksums(synAck), 'egress').bytes, 'ingress');
    assert.equal(synAckIn.dropped, false);
    assert.equal(multi.events.at(-1)?.peer, 'spiffe://hs.synpass/db');
  });

  it('a connection opened in a workload cgroup speaks as that workload whatever its uid, and the kernel learns it under the workload', async () => {
    const cgroup = '/system.slice/reports.service';
    const reports: WorkloadIdentity = {
      name: 'reports',
      subject: 'spiffe://hs.synpass/web-reports',
      uids: [],
      cgroups: [cgroup],
      ports: [],
      attestors: [new StaticAttestor({ 'app.tier': 'frontend' }), new ProcessAttestor([], [cgroup])],
    };
    // Workload number 2: the second of `workloads`, as the kernel's cgroup table names it.
    const multi = await agent(domain, 'web-multi', 'frontend', clock, [batchWorkload(new ProcessAttestor([1234])), reports]);
    const clientKernel = recordingKernelPath(true, 2);
    multi.handler.useKernelPath(clientKernel.path);
    server.handler.useKernelPath(recordingKernelPath().path);
    const seen: VerifiedIdentity[] = [];
    const serverQueue = new VirtualQueue(server.handler, (event) => {
      if (event.peer) seen.push(event.peer);
    });
    // uid 1234 alone would be batch, which admission refuses; its cgroup makes it reports.
    const synIn = serverQueue.deliver(multi.queue.deliver(SYN, 'egress', 0, 1234).bytes, 'ingress');
    assert.equal(synIn.dropped, false);
    // Asked by the SYN's own source and ISN, which a destination NAT before the queue keeps.
    assert.deepEqual(clientKernel.told.asked, [`10.213.5.1:25750 isn ${Buffer.from(SYN).readUInt32BE(24)}`]);
    assert.equal(seen.at(-1)?.subject, 'spiffe://hs.synpass/web-reports');
    assert.equal(seen.at(-1)?.attributes['process.cgroup'], cgroup);
    const synAckIn = multi.queue.deliver(serverQueue.deliver(READY_SYN_ACK, 'egress').bytes, 'ingress');
    assert.equal(synAckIn.dropped, false);
    assert.deepEqual(clientKernel.told.servers.map((entry) => entry.owner), [{ uid: 1234, workload: 2 }]);
  });

  it('a pod this node routes for speaks as itself in both directions (address workloads)', async () => {
    const podAttributes = (name: string) =>
      new Map([
        ['k8s.namespace', { value: 'shop', attestor: 'k8s' }],
        ['k8s.service-account', { value: name, attestor: 'k8s' }],
        ['k8s.label.app', { value: name, attestor: 'k8s' }],
      ]);
    const clientNode = await identityHandler(domain, 'web-node', { attributes: { 'app.tier': 'frontend' }, admission, clock, namespaces: ['app', 'k8s'] });
    const serverNode = await identityHandler(domain, 'db-node', {
      attributes: {},
      admission: { protectedPorts: [7000], allow: [{ subject: 'spiffe://hs.synpass/ns/shop/sa/web*' }], allowWithoutIdentity: [] },
      clock,
      namespaces: ['app', 'k8s'],
    });
    const webPod = podAttributes('web');
    const dbPod = podAttributes('db');
    await clientNode.local.setAddressSource(() => [{ address: '10.213.5.1', name: 'shop/web-1', subject: 'spiffe://hs.synpass/ns/shop/sa/web', attributes: webPod }]);
    await serverNode.local.setAddressSource(() => [{ address: '10.213.5.2', name: 'shop/db-1', subject: 'spiffe://hs.synpass/ns/shop/sa/db', attributes: dbPod }]);
    const seen: (string | undefined)[] = [];
    const clientQueue = new VirtualQueue(clientNode.handler, (event) => seen.push(event.peer?.subject));
    const serverQueue = new VirtualQueue(serverNode.handler, (event) => seen.push(event.peer?.subject));
    const synIn = serverQueue.deliver(clientQueue.deliver(SYN, 'egress').bytes, 'ingress');
    assert.equal(synIn.dropped, false);
    assert.equal(seen.at(-1), 'spiffe://hs.synpass/ns/shop/sa/web', 'the server sees the client pod');
    const synAckIn = clientQueue.deliver(serverQueue.deliver(SYN_ACK, 'egress').bytes, 'ingress');
    assert.equal(synAckIn.dropped, false);
    assert.equal(seen.at(-1), 'spiffe://hs.synpass/ns/shop/sa/db', 'the client sees the server pod');
    // A pod whose attributes did not change keeps its signed token across refreshes.
    const before = clientNode.local.tokenForAddress('10.213.5.1')?.token;
    await clientNode.local.refreshAddresses();
    assert.equal(clientNode.local.tokenForAddress('10.213.5.1')?.token, before);
  });
});
