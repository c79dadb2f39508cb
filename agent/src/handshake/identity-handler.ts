// The identity handshake (docs/protocol.md). The client's SYN carries its credential, token,
// nonce and time; the server's SYN-ACK its own plus a proof binding both nonces and ISNs; the
// client's first ACK its proof. Both sides verify the other's proof. When the client already
// knows the server's agent, its SYN carries a proof too and the handshake ends at the SYN-ACK.
import { destinationAddress, sourceAddress } from '../datapath/addresses.ts';
import type { Decision, HandshakeHandler, HeldPacket, PacketInfo } from '../datapath/handler.ts';
import { TCP_FIN, TCP_RST } from '../datapath/packet.ts';
import type { Reason } from '../datapath/reasons.ts';
import type { LocalIdentity, LocalPods } from '../identity/local-identity.ts';
import type { VerifiedIdentity } from '../token/identity-token.ts';
import type { Authorization, AuthorizationQuery, Authorizer } from './authorizer.ts';
import { ExpiringTable, flowKey, type Flow, type SeenNonce } from './handshake-state.ts';
import { PairKeys, type PeerVerifier, type VerifiedPeer } from './peer-verifier.ts';
import { ackProof, ackProofValid, keyId, NoncePool, synAckProof, synAckProofValid, synProof, synProofValid, type AckTranscript, type SynTranscript } from '../protocol/proofs.ts';
import { HandshakeReject } from './reasons.ts';
import { signSyn, synSignatureValid } from '../protocol/syn-signature.ts';
import {
  decodeMessage,
  encodeTransient,
  FLAG_FAST,
  FLAG_SYN_PROOF,
  FLAG_SYN_SIGNATURE,
  MessageType,
  UnsupportedVersionError,
  WireError,
  type HandshakeMessage,
  type SynMessage,
} from '../protocol/wire.ts';

export interface IdentityHandlerOptions {
  replayWindowSeconds: number;
  /** How long a handshake may take before its state is forgotten. */
  handshakeTimeoutMs: number;
  maxFlows: number;
  maxNonces: number;
  now?: () => number;
  /** Workloads on this host known by address (Kubernetes pods behind the node's routing). */
  localPods?: LocalPods;
}

interface KnownServer {
  keyId: Buffer;
  pairKey: Buffer;
}

/** This agent's key-agreement key before the last rotation, honoured for SYN proofs until its credential expires. */
interface PreviousKey {
  keyId: Buffer;
  untilMs: number;
  pairKeys: PairKeys;
}

/** Completed server-side flows are kept this long to tell duplicates from replays. */
const COMPLETED_LINGER_MS = 10_000;
/** How long a segment that overtook the client's proof may wait for it, and how many may. */
const HOLD_MS = 100;
const MAX_HELD_PER_FLOW = 4;
const MAX_HELD = 1024;

type ServerFlow = Flow & { completed?: boolean; held?: HeldPacket[] };

export class IdentityHandler implements HandshakeHandler {
  private readonly flows: ExpiringTable<ServerFlow>;
  private heldCount = 0;
  private readonly nonces: ExpiringTable<SeenNonce>;
  private readonly knownServers = new Map<string, KnownServer>();
  private previousKey: PreviousKey | null = null;
  private readonly now: () => number;
  private readonly noncePool = new NoncePool();

  constructor(
    private local: LocalIdentity,
    private readonly verifier: PeerVerifier,
    private authorizer: Authorizer,
    private readonly options: IdentityHandlerOptions,
  ) {
    this.now = options.now ?? Date.now;
    this.flows = new ExpiringTable(options.maxFlows, this.now);
    this.nonces = new ExpiringTable(options.maxNonces, this.now);
  }

  decide(info: PacketInfo, decision: Decision): void {
    const packet = info.packet;
    if ((packet.flags & TCP_RST) !== 0) {
      // A reset ends the attempt; it never carries or needs a token.
      decision.reason = 'ok';
      decision.release = true;
      return;
    }
    let peer: VerifiedIdentity | null = null;
    try {
      if (info.direction === 'egress') {
        if (info.stage === 'syn') this.clientSyn(info, decision);
        else if (info.stage === 'syn-ack') this.serverSynAck(info, decision);
        else this.clientAck(info, decision);
      } else if (info.stage === 'syn') peer = this.serverSyn(info, decision);
      else if (info.stage === 'syn-ack') peer = this.clientSynAck(info, decision);
      else this.serverAck(info, decision);
    } catch (error) {
      if (!(error instanceof HandshakeReject)) throw error;
      decision.drop(error.reason);
      peer = error.peer;
    }
    decision.peer = peer;
  }

  private decode(info: PacketInfo): HandshakeMessage {
    try {
      return decodeMessage(info.token!);
    } catch (error) {
      if (error instanceof UnsupportedVersionError) throw new HandshakeReject('unsupported-version', error.message);
      if (error instanceof WireError) throw new HandshakeReject('malformed-handshake', error.message);
      throw error;
    }
  }

  // --- client side ---------------------------------------------------------------------------

  private clientSyn(info: PacketInfo, decision: Decision): void {
    const packet = info.packet;
    const server = destinationAddress(packet);
    const client = sourceAddress(packet);
    const key = flowKey(client, packet.sourcePort, server, packet.destinationPort);
    const existing = this.flows.get(key);
    if (existing?.syn && existing.clientIsn === packet.sequence) {
      // A retransmitted SYN carries the same message, so the server can recognise it. An
      // unanswered fast SYN may have met a server whose key changed and which therefore cannot
      // check its proof: the retransmit adds the signature a first-contact SYN carries.
      if (existing.fast) this.addSignature(existing.syn);
      this.attach(decision, encodeTransient(existing.syn));
      decision.track = true;
      decision.reason = 'ok';
      return;
    }
    // A pod this node routes for speaks as itself; otherwise the owner of the local socket does.
    const own = this.local.tokenForAddress(client) ?? this.local.tokenForOwner(info.uid);
    const nonce = this.noncePool.next();
    const time = Math.floor(this.now() / 1000);
    const known = this.knownServers.get(server);
    // A known server checks the SYN proof under the pair key; any other gets the agent's
    // signature (an ECDSA signing per first-contact connection, none once the pair is known).
    const syn: SynMessage = {
      type: MessageType.Syn,
      flags: known ? FLAG_SYN_PROOF : FLAG_SYN_SIGNATURE,
      credential: this.local.packedCredential,
      token: own.packed,
      nonce,
      time,
      peerKeyId: known?.keyId ?? null,
      proof: known ? synProof(known.pairKey, { nonce, time, clientIsn: packet.sequence, tokenSignature: own.packed.signature }) : null,
      signature: known ? null : signSyn(this.local.signKey, nonce, time, own.packed.signature),
    };
    const stored = this.flows.set(key, {
      role: 'client',
      clientNonce: nonce,
      serverNonce: null,
      clientIsn: packet.sequence,
      serverIsn: 0,
      pairKey: known?.pairKey ?? null,
      peer: null,
      fast: known !== undefined,
      syn,
      local: own.localAttributes,
      expiresAt: this.now() + this.options.handshakeTimeoutMs,
    });
    if (!stored) throw new HandshakeReject('flow-table-full');
    this.attach(decision, encodeTransient(syn));
    decision.track = true;
    decision.reason = 'ok';
  }

  private clientSynAck(info: PacketInfo, decision: Decision): VerifiedIdentity | null {
    const packet = info.packet;
    const server = sourceAddress(packet);
    const key = flowKey(destinationAddress(packet), packet.destinationPort, server, packet.sourcePort);
    const flow = this.flows.get(key);
    if (info.token === null) {
      // The server runs no agent: nothing to verify, and nothing to prove in our ACK.
      this.flows.delete(key);
      const auth = this.authorize(decision, 'egress', { local: flow?.local ?? this.local.tokenForOwner(-1).localAttributes, peer: null, peerAddress: server, port: packet.sourcePort });
      if (!auth.allowed) throw new HandshakeReject('no-identity', 'egress to a peer without identity is not allowed');
      decision.reason = auth.wouldDrop !== null ? 'observe-would-drop' : 'peer-without-agent';
      decision.release = true;
      return null;
    }
    const message = this.decode(info);
    if (message.type !== MessageType.SynAck) throw new HandshakeReject('malformed-handshake');
    if (flow?.role !== 'client' || packet.acknowledgment !== ((flow.clientIsn + 1) >>> 0)) {
      throw new HandshakeReject('unknown-flow');
    }
    const peer = this.verifier.verify(message.credential, message.token);
    const pairKey = this.verifier.pairKey(peer.credential);
    const synAck = { flags: message.flags, clientNonce: flow.clientNonce, serverNonce: message.nonce, clientIsn: flow.clientIsn, serverIsn: packet.sequence, tokenSignature: message.token.signature };
    if (!synAckProofValid(pairKey, synAck, message.proof)) {
      throw new HandshakeReject('bad-proof');
    }
    const fast = (message.flags & FLAG_FAST) !== 0;
    if (fast && !flow.fast) throw new HandshakeReject('bad-proof', 'server claimed a fast handshake the client did not offer');
    // Mutual authorization: the sender decides egress once it knows who answered.
    const auth = this.authorize(decision, 'egress', { local: flow.local ?? this.local.tokenForOwner(-1).localAttributes, peer: peer.identity, peerAddress: server, port: packet.sourcePort });
    if (!auth.allowed) throw new HandshakeReject('not-allowed', 'egress to this identity is not allowed', peer.identity);
    this.rememberServer(server, peer.credential.kexRaw, pairKey);
    flow.serverNonce = Buffer.from(message.nonce);
    flow.serverIsn = packet.sequence;
    flow.pairKey = pairKey;
    flow.peer = peer.identity;
    if (fast) {
      this.flows.delete(key);
      decision.release = true;
      decision.reason = 'ok-fast';
    } else {
      decision.reason = 'ok';
    }
    if (auth.wouldDrop !== null) decision.reason = 'observe-would-drop';
    return peer.identity;
  }

  private clientAck(info: PacketInfo, decision: Decision): void {
    const packet = info.packet;
    const key = flowKey(sourceAddress(packet), packet.sourcePort, destinationAddress(packet), packet.destinationPort);
    const flow = this.flows.get(key);
    decision.reason = 'ok';
    decision.release = true;
    if (flow?.role !== 'client' || flow.serverNonce === null || flow.pairKey === null) return;
    // Kept until it expires: a segment racing the release verdict carries the same proof.
    this.attach(decision, encodeTransient({ type: MessageType.Ack, proof: ackProof(flow.pairKey, ackTranscript(flow)) }));
  }

  // --- server side ---------------------------------------------------------------------------

  private serverSyn(info: PacketInfo, decision: Decision): VerifiedIdentity | null {
    const packet = info.packet;
    const client = sourceAddress(packet);
    const port = packet.destinationPort;
    const pods = this.options.localPods;
    const serverAddress = destinationAddress(packet);
    const destinationPod = pods?.identityOf(serverAddress);
    if (info.token === null && destinationPod !== undefined) {
      // Pod to pod through this node: both ends are known here, so no token travels; the
      // decision is the same mutual one (the server pod's ingress, the client pod's egress).
      const sourcePod = pods?.identityOf(client) ?? null;
      const ingress = this.authorize(decision, 'ingress', { local: destinationPod.attributes, peer: sourcePod, peerAddress: client, port });
      if (!ingress.allowed) throw new HandshakeReject(sourcePod === null ? 'no-identity' : 'not-allowed', 'pod ingress not allowed', sourcePod);
      if (sourcePod !== null) {
        const egress = this.authorize(decision, 'egress', { local: sourcePod.attributes, peer: destinationPod, peerAddress: serverAddress, port });
        if (!egress.allowed) throw new HandshakeReject('not-allowed', 'pod egress not allowed', sourcePod);
        // Logged from the server pod's side, with the ingress rule unless egress had the say.
        decision.local = destinationPod.attributes;
        if (ingress.rule !== null) {
          decision.rule = ingress.rule;
          decision.revision = ingress.revision;
        }
        decision.wouldDrop ??= ingress.wouldDrop;
      }
      decision.reason = decision.wouldDrop !== null ? 'observe-would-drop' : 'ok-local';
      decision.release = true;
      return sourcePod;
    }
    if (info.token === null && pods !== undefined && destinationPod === undefined && !pods.isNodeAddress(serverAddress) && pods.identityOf(client) !== undefined) {
      // A local pod's SYN on its way out through the node: POSTROUTING queues it again and it
      // leaves with the pod's token; nothing to decide or release here.
      decision.reason = 'ok';
      return null;
    }
    const local = destinationPod?.attributes ?? this.local.tokenForPort(port).localAttributes;
    if (info.token === null) {
      const auth = this.authorize(decision, 'ingress', { local, peer: null, peerAddress: client, port });
      if (!auth.allowed) throw new HandshakeReject('no-identity');
      decision.reason = auth.wouldDrop !== null ? 'observe-would-drop' : auth.unrestricted ? 'unprotected-port' : 'allowed-without-identity';
      decision.release = true;
      return null;
    }
    const message = this.decode(info);
    if (message.type !== MessageType.Syn) throw new HandshakeReject('malformed-handshake');
    const nowMs = this.now();
    if (Math.abs(nowMs / 1000 - message.time) > this.options.replayWindowSeconds) throw new HandshakeReject('stale-timestamp');
    const key = flowKey(client, packet.sourcePort, serverAddress, port);
    const nonceKey = Buffer.from(message.nonce.buffer, message.nonce.byteOffset, message.nonce.length).toString('latin1');
    const seen = this.nonces.get(nonceKey);
    if (seen !== undefined) {
      const pending = this.flows.get(key);
      if (seen.flow === key && seen.clientIsn === packet.sequence && pending?.role === 'server' && !pending.completed) {
        decision.track = true;
        decision.reason = 'ok';
        return pending.peer;
      }
      throw new HandshakeReject('replayed-syn');
    }
    const peer = this.verifier.verify(message.credential, message.token);
    const auth = this.authorize(decision, 'ingress', { local, peer: peer.identity, peerAddress: client, port });
    if (!auth.allowed) throw new HandshakeReject('not-allowed', 'identity not admitted to this port', peer.identity);
    const pairKey = this.verifier.pairKey(peer.credential);
    let fast = false;
    if (message.proof !== null && message.peerKeyId !== null && this.local.keyId.equals(message.peerKeyId)) {
      // Proved to our current key: a mismatch can only be tampering.
      if (!synProofValid(pairKey, synTranscript(message, packet.sequence), message.proof)) {
        throw new HandshakeReject('bad-proof', 'SYN proof does not match', peer.identity);
      }
      fast = true;
    } else if (this.provedToPreviousKey(message, packet.sequence, peer)) {
      // Fresh, but the client knows our old key: the handshake goes on under the new one, with
      // an ACK proof, and the client learns the new key from our SYN-ACK.
    } else if (message.signature !== null) {
      // Checked last: only an identity policy admits costs this verification.
      if (!synSignatureValid(peer.credential.signKey, message.nonce, message.time, message.token.signature, message.signature)) {
        throw new HandshakeReject('bad-proof', 'SYN signature does not verify', peer.identity);
      }
    } else {
      // Bearer credential and token alone prove nothing fresh: they may come from a capture.
      throw new HandshakeReject('unproven-syn', 'SYN carries neither a proof to our key nor a signature', peer.identity);
    }
    const window = this.options.replayWindowSeconds * 2000;
    if (!this.nonces.set(nonceKey, { flow: key, clientIsn: packet.sequence, expiresAt: nowMs + window })) {
      throw new HandshakeReject('replay-cache-full');
    }
    const stored = this.flows.set(key, {
      role: 'server',
      clientNonce: Buffer.from(message.nonce),
      serverNonce: null,
      clientIsn: packet.sequence,
      serverIsn: 0,
      pairKey,
      peer: peer.identity,
      fast,
      syn: null,
      local: null,
      expiresAt: nowMs + this.options.handshakeTimeoutMs,
    });
    if (!stored) throw new HandshakeReject('flow-table-full');
    decision.track = true;
    decision.reason = auth.wouldDrop !== null ? 'observe-would-drop' : fast ? 'ok-fast' : 'ok';
    return peer.identity;
  }

  private serverSynAck(info: PacketInfo, decision: Decision): void {
    const packet = info.packet;
    const server = sourceAddress(packet);
    const key = flowKey(destinationAddress(packet), packet.destinationPort, server, packet.sourcePort);
    const flow = this.flows.get(key);
    if (flow?.role === 'client') {
      // A remote server's SYN-ACK forwarded to a local pod: judged (and stripped) on the way in.
      decision.reason = 'ok';
      return;
    }
    if (flow?.role !== 'server' || flow.pairKey === null) {
      decision.reason = 'peer-without-agent';
      decision.release = true;
      return;
    }
    // Retransmitted SYN-ACKs reuse the nonce, so the proof stays the one the client checks.
    flow.serverNonce ??= this.noncePool.next();
    flow.serverIsn = packet.sequence;
    const flags = flow.fast ? FLAG_FAST : 0;
    const token = (this.local.tokenForAddress(server) ?? this.local.tokenForPort(packet.sourcePort)).packed;
    const proof = synAckProof(flow.pairKey, { flags, clientNonce: flow.clientNonce, serverNonce: flow.serverNonce, clientIsn: flow.clientIsn, serverIsn: flow.serverIsn, tokenSignature: token.signature });
    this.attach(
      decision,
      encodeTransient({ type: MessageType.SynAck, flags, credential: this.local.packedCredential, token, nonce: flow.serverNonce, proof }),
    );
    decision.reason = flow.fast ? 'ok-fast' : 'ok';
    if (flow.fast) {
      flow.completed = true;
      decision.release = true;
    }
  }

  private serverAck(info: PacketInfo, decision: Decision): void {
    const packet = info.packet;
    const key = flowKey(sourceAddress(packet), packet.sourcePort, destinationAddress(packet), packet.destinationPort);
    const flow = this.flows.get(key);
    if (info.token === null) {
      if (flow?.role === 'server' && !flow.completed) {
        // A segment that overtook the ACK carrying the client's proof (the two can leave the
        // client on different CPUs): it waits for that ACK instead of being dropped into a
        // retransmission timeout. Until then it is not trusted: without the proof it is dropped.
        if (this.hold(flow, decision)) return;
        throw new HandshakeReject('no-identity', 'first ACK without a proof');
      }
      decision.reason = 'ok';
      // A local pod's first ACK on its way out: POSTROUTING adds the proof and releases.
      if (flow?.role !== 'client') decision.release = true;
      return;
    }
    const message = this.decode(info);
    if (message.type !== MessageType.Ack) throw new HandshakeReject('malformed-handshake');
    if (flow?.role !== 'server' || flow.serverNonce === null) throw new HandshakeReject('replayed-ack');
    const valid = ackProofValid(flow.pairKey!, ackTranscript(flow), message.proof);
    if (flow.completed) {
      // Only a segment that raced the client's release (data, or a FIN from a client that closes
      // at once) may repeat the proof; a bare repeated ACK is a duplicate or a replay and is
      // never delivered.
      if (!valid || (packet.applicationPayloadLength === 0 && (packet.flags & TCP_FIN) === 0)) throw new HandshakeReject('replayed-ack');
      decision.reason = 'ok';
      decision.release = true;
      return;
    }
    if (!valid) {
      this.settleHeld(flow, false, 'bad-proof');
      throw new HandshakeReject('bad-proof');
    }
    flow.completed = true;
    flow.expiresAt = this.now() + COMPLETED_LINGER_MS;
    this.settleHeld(flow, true, 'ok');
    decision.reason = 'ok';
    decision.release = true;
  }

  /** Holds a proof-less segment of a pending flow; false when the bounds say drop it instead. */
  private hold(flow: ServerFlow, decision: Decision): boolean {
    if ((flow.held?.length ?? 0) >= MAX_HELD_PER_FLOW || this.heldCount >= MAX_HELD) return false;
    decision.hold((held) => {
      this.heldCount += 1;
      let settled = false;
      const settle = (accepted: boolean, reason: Reason): void => {
        if (settled) return;
        settled = true;
        this.heldCount -= 1;
        clearTimeout(timer);
        if (accepted) held.accept(reason);
        else held.drop(reason);
      };
      const timer = setTimeout(() => {
        settle(false, 'no-identity');
      }, HOLD_MS);
      timer.unref();
      (flow.held ??= []).push({
        accept: (reason) => {
          settle(true, reason);
        },
        drop: (reason) => {
          settle(false, reason);
        },
      });
    });
    return true;
  }

  private settleHeld(flow: ServerFlow, accepted: boolean, reason: Reason): void {
    const held = flow.held;
    if (held === undefined) return;
    delete flow.held;
    for (const packet of held) {
      if (accepted) packet.accept(reason);
      else packet.drop(reason);
    }
  }

  /**
   * Whether a SYN proof names the key this agent had before its last rotation and is valid under
   * the pair key derived from it (a mismatch there is tampering, as under the current key).
   */
  private provedToPreviousKey(syn: SynMessage, clientIsn: number, peer: VerifiedPeer): boolean {
    const previous = this.previousKey;
    if (syn.proof === null || syn.peerKeyId === null) return false;
    if (previous === null || this.now() > previous.untilMs || !previous.keyId.equals(syn.peerKeyId)) return false;
    if (!synProofValid(previous.pairKeys.get(peer.credential), synTranscript(syn, clientIsn), syn.proof)) {
      throw new HandshakeReject('bad-proof', 'SYN proof to our previous key does not match', peer.identity);
    }
    return true;
  }

  // --- shared --------------------------------------------------------------------------------


  /** Asks the authorizer and records what the flow log needs: rule, revision, local identity. */
  private authorize(decision: Decision, direction: 'ingress' | 'egress', query: AuthorizationQuery): Authorization {
    const auth = direction === 'ingress' ? this.authorizer.ingress(query) : this.authorizer.egress(query);
    decision.rule = auth.rule;
    decision.revision = auth.revision;
    decision.wouldDrop = auth.wouldDrop;
    decision.local = query.local;
    return auth;
  }

  /** Adds the agent's signature to a kept SYN message (a retransmit, see clientSyn); once. */
  private addSignature(syn: SynMessage): void {
    if (syn.signature !== null) return;
    syn.flags |= FLAG_SYN_SIGNATURE;
    syn.signature = signSyn(this.local.signKey, syn.nonce, syn.time, syn.token.signature);
  }

  private attach(decision: Decision, body: Uint8Array): void {
    decision.token = body;
    decision.tokenLength = body.length;
  }

  private rememberServer(address: string, kexRaw: Buffer, pairKey: Buffer): void {
    if (this.knownServers.size >= 4096 && !this.knownServers.has(address)) {
      const oldest = this.knownServers.keys().next().value;
      if (oldest !== undefined) this.knownServers.delete(oldest);
    }
    this.knownServers.set(address, { keyId: keyId(kexRaw), pairKey });
  }

  /** The authorizer used from the next handshake on (policy reload swaps the set inside it). */
  useAuthorizer(authorizer: Authorizer): void {
    this.authorizer = authorizer;
  }

  /**
   * Rotation: new credential, keys and tokens for every new handshake. Handshakes in flight
   * finish with the pair keys they started with; released connections never notice.
   */
  useIdentity(local: LocalIdentity): void {
    if (!local.keyId.equals(this.local.keyId)) {
      // Clients that know the old key still prove their SYNs to it; honour that while it lives.
      const old = this.local;
      this.previousKey = { keyId: old.keyId, untilMs: old.credential.expiresAt * 1000, pairKeys: new PairKeys({ kex: old.kex, kexRaw: old.kexRaw }) };
    }
    this.local = local;
    this.knownServers.clear();
  }

  /** Forget which agents serve which addresses: the next SYN to each takes the full handshake. */
  forgetServers(): void {
    this.knownServers.clear();
  }

  stats(): Record<string, number> {
    return { flows: this.flows.size, nonces: this.nonces.size, knownServers: this.knownServers.size };
  }
}

function synTranscript(syn: SynMessage, clientIsn: number): SynTranscript {
  return { nonce: syn.nonce, time: syn.time, clientIsn, tokenSignature: syn.token.signature };
}

function ackTranscript(flow: Flow): AckTranscript {
  return { clientNonce: flow.clientNonce, serverNonce: flow.serverNonce!, clientIsn: flow.clientIsn, serverIsn: flow.serverIsn };
}
