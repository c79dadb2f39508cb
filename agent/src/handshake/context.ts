// What both ends of the identity handshake share on this agent: its identity, the verifier and
// authorizer, the bounded tables of handshakes in progress and SYN nonces seen, the servers it
// knows (their pair keys), each source's budget of signature checks, and the small steps every
// stage takes.
import { destinationAddress, sourceAddress } from '../datapath/addresses.ts';
import type { Decision } from '../datapath/handler.ts';
import type { ParsedPacket } from '../datapath/packet.ts';
import type { LocalIdentity, LocalPods } from '../identity/local-identity.ts';
import { keyId, NoncePool, type AckTranscript } from '../protocol/proofs.ts';
import { signSyn } from '../protocol/syn-signature.ts';
import { tokenDigest } from '../protocol/token-digest.ts';
import { decodeMessage, FLAG_SYN_SIGNATURE, UnsupportedVersionError, WireError, type HandshakeMessage, type SynMessage } from '../protocol/wire.ts';
import type { Authorization, AuthorizationQuery, Authorizer } from './authorizer.ts';
import { ExpiringTable, flowKey, type Flow, type SeenNonce } from './handshake-state.ts';
import type { HeldPacket } from '../datapath/handler.ts';
import type { KernelPath } from './kernel-path.ts';
import { PairKeys, type OwnKeys, type PeerVerifier } from './peer-verifier.ts';
import { PresignedSyns } from './presigned-syns.ts';
import { refuse, type Refusal } from './reasons.ts';
import { SourceBudget } from './source-budget.ts';

export interface IdentityHandlerOptions {
  replayWindowSeconds: number;
  /** How long a handshake may take before its state is forgotten. */
  handshakeTimeoutMs: number;
  maxFlows: number;
  maxNonces: number;
  /** First-contact signature checks per second per source (0: unlimited). */
  signatureChecksPerSource: number;
  now?: () => number;
  /** Workloads on this host known by address (Kubernetes pods behind the node's routing). */
  localPods?: LocalPods;
  /** Whether an address is in the target networks, the only ones outgoing SYNs take a token to (absent: every address the rules queue toward is). */
  isTarget?: (address: string) => boolean;
}

export interface KnownServer {
  keyId: Buffer;
  pairKey: Buffer;
}

/** This agent's key-agreement key before the last rotation, honoured for SYN proofs until its credential expires. */
export interface PreviousKey {
  keyId: Buffer;
  untilMs: number;
  /** The key itself: a restart keeps it while peers' entries rest on it (kernel/saved-tables.ts). */
  own: OwnKeys;
  pairKeys: PairKeys;
}

export function previousKey(own: OwnKeys, untilMs: number): PreviousKey {
  return { keyId: keyId(own.kexRaw), untilMs, own, pairKeys: new PairKeys(own) };
}

/** A flow as the server keeps it: done once the client's proof arrived, and what waits for it. */
export type ServerFlow = Flow & { completed?: boolean; held?: HeldPacket[] };

/**
 * Where a flow is filed by what a NAT leaves alone, for the SYN-ACK, which the agent sees before
 * netfilter undoes the NAT on it.
 * - A server flow, by the client's address, port and ISN, from a DNAT between the client and the
 *   local listener: the SYN-ACK to a SYN sent to a port this host publishes for a container it
 *   routes to (on a Kubernetes node, a service address or a node port) comes back from the
 *   container or pod the DNAT chose, with its address and port.
 * - A client flow, by the server's address and port and the client's ISN, from a source NAT
 *   between the local socket and the server: the SYN-ACK to a pod's SYN that the node
 *   masquerades comes back to the node's address and port.
 */
export interface TranslatedFlow {
  /** The flow's key; null for a local pod's SYN to such an address (no flow: no token). */
  key: string | null;
  /** The address and port the client's SYN was sent to. */
  address: string;
  port: number;
  expiresAt: number;
}

/** The key of a flow by one end's address and port and the client's ISN (TranslatedFlow). */
export function isnKey(address: string, port: number, clientIsn: number): string {
  return `${address}|${port}|${clientIsn >>> 0}`;
}

/** Servers remembered (address -> key id and pair key); the oldest goes past this many. */
export const MAX_KNOWN_SERVERS = 4096;

export class HandshakeContext {
  readonly flows: ExpiringTable<ServerFlow>;
  /** Flows by what a NAT leaves alone (TranslatedFlow), for SYN-ACKs from behind a DNAT or to a source NAT's address. */
  readonly translatedFlows: ExpiringTable<TranslatedFlow>;
  readonly nonces: ExpiringTable<SeenNonce>;
  readonly knownServers = new Map<string, KnownServer>();
  readonly noncePool = new NoncePool();
  readonly presignedSyns: PresignedSyns;
  readonly signatureBudget: SourceBudget;
  readonly now: () => number;
  previousKey: PreviousKey | null = null;
  /** The kernel fast path, when it runs: told of every client workload proven at first contact. */
  kernelPath: KernelPath | null = null;
  /** Segments held for a proof, over every flow. */
  heldCount = 0;

  constructor(
    public local: LocalIdentity,
    readonly verifier: PeerVerifier,
    public authorizer: Authorizer,
    readonly options: IdentityHandlerOptions,
  ) {
    this.now = options.now ?? Date.now;
    this.flows = new ExpiringTable(options.maxFlows, this.now);
    this.translatedFlows = new ExpiringTable(options.maxFlows, this.now);
    this.nonces = new ExpiringTable(options.maxNonces, this.now);
    this.signatureBudget = new SourceBudget(options.signatureChecksPerSource);
    // A third of the window: a ready signature leaves the SYN two thirds of it against clock skew.
    this.presignedSyns = new PresignedSyns(this.noncePool, this.now, Math.floor(options.replayWindowSeconds / 3));
  }

  /**
   * Files a flow by the address and port of the end a NAT leaves alone and the client's ISN
   * (TranslatedFlow): the client's for a server flow, the server's for a client flow. False when
   * the table is full.
   */
  fileTranslated(address: string, port: number, clientIsn: number, key: string | null, sentToAddress: string, sentToPort: number): boolean {
    return this.translatedFlows.set(isnKey(address, port, clientIsn), { key, address: sentToAddress, port: sentToPort, expiresAt: this.now() + this.options.handshakeTimeoutMs });
  }

  /** A handshake released or refused before its filing expires takes it along (fileTranslated). */
  forgetTranslated(address: string, port: number, clientIsn: number): void {
    this.translatedFlows.delete(isnKey(address, port, clientIsn));
  }

  /** forgetTranslated, returning the filing: where the SYN was sent before a DNAT, if it was filed. */
  takeTranslated(address: string, port: number, clientIsn: number): TranslatedFlow | undefined {
    const key = isnKey(address, port, clientIsn);
    const filed = this.translatedFlows.get(key);
    this.translatedFlows.delete(key);
    return filed;
  }

  /** This end's workload at a local address and port: the pod's there, else this host's for the port. */
  localAt(address: string, port: number): Readonly<Record<string, string>> {
    return this.options.localPods?.identityOf(address)?.attributes ?? this.local.tokenForPort(port).localAttributes;
  }

  /** The handshake message in an ingress token area, or why it is refused. */
  decode(token: Uint8Array): HandshakeMessage | Refusal {
    try {
      return decodeMessage(token);
    } catch (error) {
      // The codec reports a malformed body as a typed error; here it becomes a verdict.
      if (error instanceof UnsupportedVersionError) return refuse('unsupported-version', error.message);
      if (error instanceof WireError) return refuse('malformed-handshake', error.message);
      throw error;
    }
  }

  /** Asks the authorizer and records what the flow log needs: rule, revision, local identity. */
  authorize(decision: Decision, direction: 'ingress' | 'egress', query: AuthorizationQuery): Authorization {
    const auth = direction === 'ingress' ? this.authorizer.ingress(query) : this.authorizer.egress(query);
    decision.rule = auth.rule;
    decision.revision = auth.revision;
    decision.wouldDrop = auth.wouldDrop;
    decision.local = query.local;
    return auth;
  }

  attach(decision: Decision, body: Uint8Array): void {
    decision.token = body;
    decision.tokenLength = body.length;
  }

  /** Adds the agent's signature to a kept SYN message (a retransmit, see clientSyn); once. */
  addSignature(syn: SynMessage): void {
    if (syn.signature !== null) return;
    syn.flags |= FLAG_SYN_SIGNATURE;
    syn.signature = signSyn(this.local.signKey, syn.nonce, syn.time, tokenDigest(syn.token));
  }

  rememberServer(address: string, kexRaw: Buffer, pairKey: Buffer): void {
    if (this.knownServers.size >= MAX_KNOWN_SERVERS && !this.knownServers.has(address)) {
      const oldest = this.knownServers.keys().next().value;
      if (oldest !== undefined) this.knownServers.delete(oldest);
    }
    this.knownServers.set(address, { keyId: keyId(kexRaw), pairKey });
  }
}

export function ackTranscript(flow: Flow): AckTranscript {
  return { clientNonce: flow.clientNonce, serverNonce: flow.serverNonce!, clientIsn: flow.clientIsn, serverIsn: flow.serverIsn };
}

/** The flow a SYN-ACK belongs to (synAckFlow). */
export interface SynAckFlow {
  key: string;
  flow: ServerFlow | undefined;
  /**
   * Found by the client's address, port and ISN: a DNAT between the client and the listener
   * answered from another address or port than the SYN was sent to (`port`). With `flow`
   * undefined, the client is a local pod whose SYN this node passed on without a token.
   */
  translated: { address: string; port: number } | null;
}

/**
 * The flow a SYN-ACK belongs to: by its addresses and ports, or else the server flow of the SYN
 * it acknowledges, by the client's address, port and ISN (a DNAT changed the server's end), or
 * the client flow, by the server's address, port and the client's ISN (a source NAT changed the
 * client's end).
 */
export function synAckFlow(ctx: HandshakeContext, packet: ParsedPacket): SynAckFlow {
  const client = destinationAddress(packet);
  const key = flowKey(client, packet.destinationPort, sourceAddress(packet), packet.sourcePort);
  const flow = ctx.flows.get(key);
  if (flow !== undefined) return { key, flow, translated: null };
  const clientIsn = (packet.acknowledgment - 1) >>> 0;
  const filed = ctx.translatedFlows.get(isnKey(client, packet.destinationPort, clientIsn));
  if (filed === undefined) {
    // Sent from behind a source NAT (a pod the node masquerades): the SYN-ACK's destination is
    // the NAT's address and port; the server's and the ISN are the client flow's own.
    const sent = ctx.translatedFlows.get(isnKey(sourceAddress(packet), packet.sourcePort, clientIsn));
    const original = sent?.key == null ? undefined : ctx.flows.get(sent.key);
    if (sent?.key != null && original?.role === 'client' && original.clientIsn === clientIsn) return { key: sent.key, flow: original, translated: null };
    return { key, flow: undefined, translated: null };
  }
  if (filed.key === null) return { key, flow: undefined, translated: { address: filed.address, port: filed.port } };
  const original = ctx.flows.get(filed.key);
  if (original?.role !== 'server' || original.clientIsn !== clientIsn) return { key, flow: undefined, translated: null };
  return { key: filed.key, flow: original, translated: { address: filed.address, port: filed.port } };
}
