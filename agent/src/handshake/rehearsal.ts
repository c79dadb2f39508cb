// First contacts are rare by design: after one, a pair is known (to the kernel, or by its pair
// key). Their code would run in V8's slow tiers for most of an agent's life, and there a first
// contact costs about twice the CPU it costs compiled (docs/protocol.md, First contact). So the
// agent rehearses first contacts when it starts: two throwaway agents of a throwaway trust domain,
// in memory, run whole handshakes through the same engine, handshake and token code, one at a
// time between real packets. The rehearsal shares nothing with the real handler: its own keys,
// bundles, policy, caches, tables and counters, and no log, metric, kernel or socket.
import type { KeyObject } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { tcpChecksum, writeUint16 } from '../datapath/checksum.ts';
import { VirtualQueue } from '../datapath/virtual-queue.ts';
import { SynpassError } from '../errors.ts';
import { StaticAttestor } from '../identity/attestors/static.ts';
import { newAgent, newTrustDomain, type SigningKeyType } from '../identity/issuance.ts';
import { LocalIdentity } from '../identity/local-identity.ts';
import { parseBundle, type TrustBundle } from '../token/trust-bundle.ts';
import { Admission } from './admission.ts';
import { AdmissionAuthorizer } from './authorizer.ts';
import { IdentityHandler } from './identity-handler.ts';
import { PeerVerifier } from './peer-verifier.ts';

export class RehearsalError extends SynpassError<'handshake-failed'> {
  override readonly name = 'RehearsalError';
}

/** A Linux handshake as captured in the lab (6.18, veth): SYN (mss, sackOK, TS, wscale), its SYN-ACK, the first ACK. */
export const LINUX_HANDSHAKE = {
  syn: Buffer.from('4500003caaaa4000400670650ad505010ad5050264961b58cda47bf300000000a002faf01fdb0000020405b40402080a99bf1f9f000000000103030a', 'hex'),
  synAck: Buffer.from('4500003c0000400040061b100ad505020ad505011b58649633338acacda47bf4a012fe881fdb0000020405b40402080a587cbabc99bf1f9f0103030a', 'hex'),
  ack: Buffer.from('45000034aaab40004006706c0ad505010ad5050264961b58cda47bf433338acb8010003f1fd300000101080a99bf1f9f587cbabc', 'hex'),
} as const;

/** The same over IPv6, as captured in the lab: SYN (mss 1440, sackOK, TS, wscale), its SYN-ACK, the first ACK. */
export const LINUX_HANDSHAKE_IPV6 = {
  syn: Buffer.from('6004b6be00280640fd535350000000050000000000000001fd535350000000050000000000000002bd161b58b5adf58300000000a002fd20a1830000020405a00402080a0772c59e000000000103030a', 'hex'),
  synAck: Buffer.from('6007ffd000280640fd535350000000050000000000000002fd5353500000000500000000000000011b58bd169b2cf85db5adf584a012fb04a1830000020405a00402080a0b96b8eb0772c59e0103030a', 'hex'),
  ack: Buffer.from('6004b6be00200640fd535350000000050000000000000001fd535350000000050000000000000002bd161b58b5adf5849b2cf85e80100040a17b00000101080a0772c59e0b96b8eb', 'hex'),
} as const;

/** Where each family's handshake keeps its addresses and its TCP header. */
const FAMILIES = [
  { packets: LINUX_HANDSHAKE, ipVersion: 4, sourceOffset: 12, tcpOffset: 20 },
  { packets: LINUX_HANDSHAKE_IPV6, ipVersion: 6, sourceOffset: 8, tcpOffset: 40 },
] as const;
type Family = (typeof FAMILIES)[number];

const TRUST_DOMAIN = 'rehearsal.synpass.invalid';
const FIRST_PORT = 1024;
/** Handshakes between two ends before they are replaced: bounds what the rehearsal holds at once. */
const ROUND = 100;

export interface RehearsalOptions {
  /** The algorithm of this agent's own signing key, so the rehearsal verifies what its peers send. */
  signingKey: SigningKeyType;
  /** The type of the key that signed this agent's own credential: its peers' credentials are most likely signed alike. */
  caKey: SigningKeyType;
  /** Ends the rehearsal after the handshake in progress (the agent stops). */
  signal?: AbortSignal;
  now?: () => number;
}

export interface Rehearsed {
  handshakes: number;
  milliseconds: number;
}

interface End {
  local: LocalIdentity;
  verifier: PeerVerifier;
  handler: IdentityHandler;
  queue: VirtualQueue;
  /** The reason of this end's last verdict, for a failure's message. */
  lastReason: string;
}

async function throwawayIdentity(caKey: KeyObject, bundles: ReadonlyMap<string, TrustBundle>, name: string, options: RehearsalOptions): Promise<LocalIdentity> {
  const nowSeconds = Math.floor((options.now ?? Date.now)() / 1000);
  const agent = await newAgent(caKey, { trustDomain: TRUST_DOMAIN, agentId: name, namespaces: ['app'], ttlSeconds: 3600, signingKey: options.signingKey, nowSeconds });
  const inMemory = `(rehearsal ${name}, in memory)`;
  return LocalIdentity.fromMaterial(
    {
      files: { credential: inMemory, signingKey: inMemory, keyAgreementKey: inMemory, trustBundles: inMemory },
      subject: `spiffe://${TRUST_DOMAIN}/${name}`,
      attestors: [new StaticAttestor({ 'app.name': name })],
      tokenTtlSeconds: 3600,
    },
    { credentialCompact: agent.credential, signKey: agent.signKey, kex: agent.kex, bundles: new Map(bundles) },
    nowSeconds,
  );
}

/** An end with fresh tables, replaced every ROUND handshakes: each one leaves a nonce and a lingering flow behind. */
function freshEnd(local: LocalIdentity, options: RehearsalOptions): End {
  const now = options.now ?? Date.now;
  const verifier = new PeerVerifier(local.bundles, { kex: local.kex, kexRaw: local.kexRaw }, () => Math.floor(now() / 1000));
  const everyone = new AdmissionAuthorizer(new Admission({ protectedPorts: 'all', allow: [{}], allowWithoutIdentity: [] }));
  const handler = new IdentityHandler(local, verifier, everyone, {
    replayWindowSeconds: 30,
    handshakeTimeoutMs: 30_000,
    maxFlows: ROUND + 16,
    maxNonces: ROUND + 16,
    signatureChecksPerSource: 0,
    now,
  });
  const end: End = { local, verifier, handler, queue: new VirtualQueue(handler, (event) => { end.lastReason = event.reason; }), lastReason: '' };
  return end;
}

/** A packet of a family's handshake with the client's port set (source or destination) and a full TCP checksum. */
function withClientPort(family: Family, template: Buffer, port: number, clientPortOffset: number): Uint8Array {
  const packet = Uint8Array.from(template);
  const { ipVersion, sourceOffset, tcpOffset } = family;
  writeUint16(packet, tcpOffset + clientPortOffset, port);
  writeUint16(packet, tcpOffset + 16, tcpChecksum(packet, ipVersion, sourceOffset, tcpOffset, packet.length - tcpOffset));
  return packet;
}

/**
 * Runs `count` first contacts (fewer if `signal` aborts), each with both ends' peer caches
 * forgotten, yielding to the event loop between them. A handshake the rehearsal's own agents do
 * not complete is a defect in the code it rehearses, reported as a RehearsalError naming the step.
 */
export async function rehearseFirstContacts(count: number, options: RehearsalOptions): Promise<Rehearsed> {
  const started = performance.now();
  const domain = await newTrustDomain(TRUST_DOMAIN, options.caKey);
  const bundles = new Map([[TRUST_DOMAIN, parseBundle(JSON.stringify(domain.bundle), 'rehearsal bundle')]]);
  const clientIdentity = await throwawayIdentity(domain.caKey, bundles, 'client', options);
  const serverIdentity = await throwawayIdentity(domain.caKey, bundles, 'server', options);
  let client = freshEnd(clientIdentity, options);
  let server = freshEnd(serverIdentity, options);
  const step = (name: string, end: End, verdict: { dropped: boolean; held: boolean; bytes: Uint8Array }): Uint8Array => {
    if (verdict.dropped || verdict.held) {
      throw new RehearsalError('handshake-failed', `rehearsal: ${name} was ${verdict.dropped ? 'dropped' : 'held'} (${end.lastReason})`, { step: name, reason: end.lastReason });
    }
    return verdict.bytes;
  };
  let done = 0;
  for (; done < count && options.signal?.aborted !== true; done++) {
    if (done > 0 && done % ROUND === 0) [client, server] = [freshEnd(clientIdentity, options), freshEnd(serverIdentity, options)];
    for (const end of [client, server]) end.verifier.reconfigure(end.local.bundles, { kex: end.local.kex, kexRaw: end.local.kexRaw });
    client.handler.forgetServers();
    const port = FIRST_PORT + (done % ROUND);
    // IPv4 and IPv6 in turn: each family's parsing and addresses get compiled too.
    const family = FAMILIES[done % FAMILIES.length]!;
    const { packets } = family;
    const syn = step('client SYN', client, client.queue.deliver(withClientPort(family, packets.syn, port, 0), 'egress'));
    step('server SYN', server, server.queue.deliver(syn, 'ingress'));
    const synAck = step('server SYN-ACK', server, server.queue.deliver(withClientPort(family, packets.synAck, port, 2), 'egress'));
    const answered = client.queue.deliver(synAck, 'ingress');
    step('client SYN-ACK', client, answered);
    if (answered.released) throw new RehearsalError('handshake-failed', 'rehearsal: the client released at the SYN-ACK, as for a known server', { step: 'client SYN-ACK' });
    const ack = step('client ACK', client, client.queue.deliver(withClientPort(family, packets.ack, port, 0), 'egress'));
    step('server ACK', server, server.queue.deliver(ack, 'ingress'));
    await nextTurn();
  }
  return { handshakes: done, milliseconds: performance.now() - started };
}
