// The server end of the identity handshake: the client's SYN verified on its way in (replay,
// freshness, identity, policy, proof or signature), the SYN-ACK leaving with this workload's
// credential, token and proof, and the client's first ACK checked for its proof. Each step fills
// the Decision, or returns why it refuses.
import { destinationAddress, sourceAddress } from '../datapath/addresses.ts';
import type { Decision, PacketInfo } from '../datapath/handler.ts';
import { TCP_FIN } from '../datapath/packet.ts';
import { ackProofValid, synAckProof, synProofValid, synTranscriptOf } from '../protocol/proofs.ts';
import { synSignatureValid } from '../protocol/syn-signature.ts';
import { deriveFastKey } from '../protocol/fast-keys.ts';
import { tokenDigest } from '../protocol/token-digest.ts';
import { encodeTransient, FLAG_FAST, FLAG_KERNEL, MessageType, type SynMessage } from '../protocol/wire.ts';
import type { VerifiedIdentity } from '../token/identity-token.ts';
import { ackTranscript, synAckFlow, type HandshakeContext } from './context.ts';
import { flowKey } from './handshake-state.ts';
import { judgeBetweenPods, pairInKernel } from './between-pods.ts';
import { holdForProof, settleHeld } from './held.ts';
import type { VerifiedPeer } from './peer-verifier.ts';
import { Refusal, refuse } from './reasons.ts';

/** Completed server-side flows are kept this long to tell duplicates from replays. */
const COMPLETED_LINGER_MS = 10_000;

export function serverSyn(ctx: HandshakeContext, info: PacketInfo, decision: Decision): VerifiedIdentity | null | Refusal {
  const packet = info.packet;
  const client = sourceAddress(packet);
  const port = packet.destinationPort;
  const pods = ctx.options.localPods;
  const serverAddress = destinationAddress(packet);
  if (packet.fastSyn && pods?.identityOf(client) !== undefined) {
    // A local pod's fast SYN reaches the queue only when the node's kernel did not vouch for it
    // where it entered the node: the pod's link has no tc program, or the pod made it up. Either
    // way nothing proves it here; the pod's next connects are first contacts.
    ctx.kernelPath?.podUnvouched(client);
    return refuse('bad-proof', 'a local pod\'s fast SYN that the node\'s kernel did not vouch for');
  }
  const destinationPod = pods?.identityOf(serverAddress);
  if (info.token === null && destinationPod !== undefined) {
    // Pod to pod through this node.
    const pair = { serverPod: destinationPod, clientPod: pods?.identityOf(client) ?? null, clientAddress: client, serverAddress, port };
    const judged = judgeBetweenPods(ctx, decision, pair);
    if (!(judged instanceof Refusal) && decision.wouldDrop === null) pairInKernel(ctx, pair);
    return judged;
  }
  if (info.token === null && pods !== undefined && destinationPod === undefined && !pods.isNodeAddress(serverAddress) && pods.identityOf(client) !== undefined) {
    // A local pod's SYN on its way out through the node: POSTROUTING queues it again toward
    // target networks and it leaves with the pod's token. The address may be a service's that
    // the node DNATs to one of its own pods: then that pod's SYN-ACK, queued as the connection is
    // tracked, is judged between the pods where it finds this (a full table refuses the SYN, as a
    // full flow table would).
    if (!ctx.fileTranslated(client, packet.sourcePort, packet.sequence, null, serverAddress, port)) return refuse('flow-table-full');
    decision.track = true;
    decision.reason = 'ok';
    return null;
  }
  const local = ctx.localAt(serverAddress, port);
  if (info.token === null) {
    // On a node, a local pod's SYN to the node's own address (a host-network service, the
    // kubelet, a node port) carries no token, but the pod is known here: it is judged as itself.
    const clientPod = pods?.identityOf(client) ?? null;
    const auth = ctx.authorize(decision, 'ingress', { local, peer: clientPod, peerAddress: client, port });
    if (!auth.allowed) return clientPod === null ? refuse('no-identity') : refuse('not-allowed', 'pod not admitted to the node\'s port', clientPod);
    decision.reason = auth.wouldDrop !== null ? 'observe-would-drop' : clientPod !== null ? 'ok-local' : auth.unrestricted ? 'unprotected-port' : 'allowed-without-identity';
    if (pods !== undefined) {
      // On a node the address may be a service's or a node port that a DNAT sends on to one of
      // its pods, whose own policy has the last word: filed and followed to the answer, judged
      // there for that pod (clientSynAck). If the node itself answers, a local pod's egress is
      // judged there (the answering end known), and anything else released (serverSynAck).
      if (!ctx.fileTranslated(client, packet.sourcePort, packet.sequence, null, serverAddress, port)) return refuse('flow-table-full');
      decision.track = true;
      return clientPod;
    }
    decision.release = true;
    return null;
  }
  const message = ctx.decode(info.token);
  if (message instanceof Refusal) return message;
  if (message.type !== MessageType.Syn) return refuse('malformed-handshake');
  const nowMs = ctx.now();
  if (Math.abs(nowMs / 1000 - message.time) > ctx.options.replayWindowSeconds) return refuse('stale-timestamp');
  const key = flowKey(client, packet.sourcePort, serverAddress, port);
  const nonceKey = Buffer.from(message.nonce.buffer, message.nonce.byteOffset, message.nonce.length).toString('latin1');
  if (ctx.nonces.get(nonceKey) !== undefined) {
    // The same SYN again (a retransmit): its connection's pending flow was made by this nonce
    // and ISN. Anything else carrying a seen nonce is a replay.
    const pending = ctx.flows.get(key);
    if (pending?.role === 'server' && !pending.completed && pending.clientIsn === packet.sequence && Buffer.compare(pending.clientNonce, message.nonce) === 0) {
      decision.track = true;
      decision.reason = 'ok';
      return pending.peer;
    }
    return refuse('replayed-syn');
  }
  const peer = ctx.verifier.verify(message.credential, message.token);
  if (peer instanceof Refusal) return peer;
  // A new token is only claimed until this SYN's proof or signature over its digest checks out,
  // so that check comes before the policy reads it. For a token proven before it comes after,
  // so that only an identity the policy admits costs a signature verification.
  let fast = peer.tokenProven ? null : proveSyn(ctx, message, packet.sequence, peer, client, nowMs);
  if (fast instanceof Refusal) return fast;
  ctx.verifier.rememberToken(message.token, peer);
  const auth = ctx.authorize(decision, 'ingress', { local, peer: peer.identity, peerAddress: client, port });
  if (!auth.allowed) return refuse('not-allowed', 'identity not admitted to this port', peer.identity);
  fast ??= proveSyn(ctx, message, packet.sequence, peer, client, nowMs);
  if (fast instanceof Refusal) return fast;
  const pairKey = ctx.verifier.pairKey(peer.credential);
  // A replay after its SYN time left the window is refused as stale; until then the nonce is kept.
  if (!ctx.nonces.set(nonceKey, { expiresAt: (message.time + ctx.options.replayWindowSeconds + 1) * 1000 })) return refuse('replay-cache-full');
  const stored = ctx.flows.set(key, {
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
    ownIdentity: ctx.local,
    expiresAt: nowMs + ctx.options.handshakeTimeoutMs,
  });
  if (!stored) return refuse('flow-table-full');
  // A SYN to this host's address may be DNATed on (a port it publishes for a container it routes
  // to; on a node, a service address or node port to a pod): its SYN-ACK then comes from that
  // address, so the flow is filed where that SYN-ACK finds it (a pod's policy judges it there).
  // Without room there it is refused, as without a flow.
  if (destinationPod === undefined && !ctx.fileTranslated(client, packet.sourcePort, packet.sequence, key, serverAddress, port)) {
    ctx.flows.delete(key);
    return refuse('flow-table-full');
  }
  // Observed rules cannot be enforced by a kernel that only accepts or drops: they stay on the
  // queue. The kernel's entry names the local address, so a node's pods, which share its ports,
  // each keep their own policy there. The kernel takes the workload at the SYN-ACK, once it
  // shows that the listener's kernel signs.
  if (ctx.kernelPath !== null && auth.wouldDrop === null) {
    ctx.flows.get(key)!.kernelCandidate = {
      peerAddress: client,
      localAddress: serverAddress,
      port,
      fast: deriveFastKey(pairKey, message.token.signature),
      peer: peer.identity,
      local,
      expiresAt: Math.min(peer.identity.expiresAt, peer.credential.expiresAt),
      credential: peer.credential,
      // A view into the queue's receive buffer, which the next batch overwrites.
      tokenSignature: Buffer.from(message.token.signature),
    };
  }
  decision.track = true;
  decision.reason = auth.wouldDrop !== null ? 'observe-would-drop' : fast ? 'ok-fast' : 'ok';
  return peer.identity;
}

export function serverSynAck(ctx: HandshakeContext, info: PacketInfo, decision: Decision): VerifiedIdentity | null | Refusal {
  const packet = info.packet;
  const server = sourceAddress(packet);
  const { flow, translated } = synAckFlow(ctx, packet);
  if (flow?.role === 'client') {
    // A remote server's SYN-ACK forwarded to a local pod: judged (and stripped) on the way in.
    decision.reason = 'ok';
    return null;
  }
  if (flow?.role !== 'server' || flow.pairKey === null) {
    // This host answers a peer without identity (on a node, one filed in case a DNAT sent it
    // on to a pod): nothing more to follow. Or, on a node, one of its pods: judged between the
    // pod and the node's workload at the port it answers from (a service address may be in
    // front of it), the pod's egress included, whether or not a filing names the connection (the
    // node's NAT may have given it another source port); a refused answer keeps its filing, so
    // that any retransmit is refused too, and the listener's half-open connection is reset
    // (resetServer).
    const client = destinationAddress(packet);
    const clientPod = ctx.options.localPods?.identityOf(client);
    const port = packet.sourcePort;
    const judged = clientPod === undefined ? null : judgeBetweenPods(ctx, decision, { serverPod: ctx.local.tokenForPort(port).asPeer, clientPod, clientAddress: client, serverAddress: server, port });
    if (judged instanceof Refusal) {
      decision.resetServer = true;
      return judged;
    }
    if (translated !== null) ctx.forgetTranslated(client, packet.destinationPort, packet.acknowledgment - 1);
    if (judged === null) {
      decision.reason = 'peer-without-agent';
      decision.release = true;
    }
    return judged;
  }
  if (translated !== null) {
    // The SYN was judged for the address it was sent to (a published port; on a node, a service
    // address or node port). A container answered: the answer is the host's. A pod of this node
    // answered: the pod's own policy has the last word.
    const pod = ctx.options.localPods?.identityOf(server);
    if (pod !== undefined && flow.peer !== null) {
      const auth = ctx.authorize(decision, 'ingress', { local: pod.attributes, peer: flow.peer, peerAddress: destinationAddress(packet), port: packet.sourcePort });
      if (!auth.allowed) {
        decision.resetServer = true;
        return refuse('not-allowed', 'identity not admitted to the pod behind the address it connected to', flow.peer);
      }
    }
    // The kernel would see the address before the DNAT, the listener the one after.
    flow.kernelCandidate = null;
  }
  // Retransmitted SYN-ACKs reuse the nonce, so the proof stays the one the client checks.
  flow.serverNonce ??= ctx.noncePool.next();
  flow.serverIsn = packet.sequence;
  // The listener's kernel signs answers to fast SYNs only if it was opened while the programs
  // were attached; its SYN-ACK carries the ready option then. Decided once per handshake.
  // The answer comes from the identity the SYN was judged under, whose key the pair key derives
  // from, even if a renewal swapped keys since (then the kernel takes nothing: the entry would
  // rest on keys already retiring).
  const own = flow.ownIdentity ?? ctx.local;
  if (flow.kernelCandidate != null && ctx.kernelPath !== null) {
    ctx.kernelPath.listenerAnswered(packet.sourcePort, packet.kernelReady);
    flow.kernel = packet.kernelReady && own === ctx.local && ctx.kernelPath.admitClient(flow.kernelCandidate);
    flow.kernelCandidate = null;
  }
  const flags = (flow.fast ? FLAG_FAST : 0) | (flow.kernel === true ? FLAG_KERNEL : 0);
  const token = (own.tokenForAddress(server) ?? own.tokenForPort(translated?.port ?? packet.sourcePort)).packed;
  const proof = synAckProof(flow.pairKey, { flags, clientNonce: flow.clientNonce, serverNonce: flow.serverNonce, clientIsn: flow.clientIsn, serverIsn: flow.serverIsn, tokenDigest: tokenDigest(token) });
  ctx.attach(decision, encodeTransient({ type: MessageType.SynAck, flags, credential: own.packedCredential, token, nonce: flow.serverNonce, proof }));
  decision.reason = flow.fast ? 'ok-fast' : 'ok';
  if (flow.fast) {
    flow.completed = true;
    decision.release = true;
    ctx.forgetTranslated(destinationAddress(packet), packet.destinationPort, flow.clientIsn);
  }
  return null;
}

export function serverAck(ctx: HandshakeContext, info: PacketInfo, decision: Decision): Refusal | null {
  const packet = info.packet;
  const key = flowKey(sourceAddress(packet), packet.sourcePort, destinationAddress(packet), packet.destinationPort);
  const flow = ctx.flows.get(key);
  if (info.token === null) {
    if (flow?.role === 'server' && !flow.completed) {
      // Until the ACK with the client's proof arrives, a segment is not trusted: it waits for
      // that ACK when the bounds allow, and is dropped otherwise.
      if (holdForProof(ctx, flow, decision)) return null;
      return refuse('no-identity', 'first ACK without a proof');
    }
    decision.reason = 'ok';
    // A local pod's first ACK on its way out: POSTROUTING adds the proof and releases. Its flow
    // is filed under the address a DNAT put in place of a service address, which this ACK, not
    // yet translated, does not carry.
    const fromLocalPod = flow === undefined && ctx.options.localPods?.identityOf(sourceAddress(packet)) !== undefined;
    if (flow?.role !== 'client' && !fromLocalPod) decision.release = true;
    return null;
  }
  const message = ctx.decode(info.token);
  if (message instanceof Refusal) return message;
  if (message.type !== MessageType.Ack) return refuse('malformed-handshake');
  if (flow?.role !== 'server' || flow.serverNonce === null) return refuse('replayed-ack');
  const valid = ackProofValid(flow.pairKey!, ackTranscript(flow), message.proof);
  if (flow.completed) {
    // Only a segment that raced the client's release (data, or a FIN from a client that closes
    // at once) may repeat the proof; a bare repeated ACK is a duplicate or a replay and is
    // never delivered.
    if (!valid || (packet.applicationPayloadLength === 0 && (packet.flags & TCP_FIN) === 0)) return refuse('replayed-ack');
    decision.reason = 'ok';
    decision.release = true;
    return null;
  }
  if (!valid) {
    settleHeld(flow, false, 'bad-proof');
    return refuse('bad-proof');
  }
  flow.completed = true;
  flow.expiresAt = ctx.now() + COMPLETED_LINGER_MS;
  ctx.forgetTranslated(sourceAddress(packet), packet.sourcePort, flow.clientIsn);
  settleHeld(flow, true, 'ok');
  decision.reason = 'ok';
  decision.release = true;
  return null;
}

/**
 * Checks that the SYN is fresh and that its agent sent this token: a proof to our current key
 * (true: the pair is known, the handshake is fast), a proof to our previous key, or the agent's
 * signature (false). Refusals name the peer only once its token is proven.
 */
function proveSyn(ctx: HandshakeContext, message: SynMessage, clientIsn: number, peer: VerifiedPeer, client: string, nowMs: number): boolean | Refusal {
  const shown = peer.tokenProven ? peer.identity : null;
  if (message.proof !== null && message.peerKeyId !== null && ctx.local.keyId.equals(message.peerKeyId)) {
    // Proved to our current key: a mismatch can only be tampering.
    if (!synProofValid(ctx.verifier.pairKey(peer.credential), synTranscriptOf(message, clientIsn, peer.tokenDigest), message.proof)) return refuse('bad-proof', 'SYN proof does not match', shown);
    return true;
  }
  // Proved to our previous key: fresh, but the client knows our old key; the handshake goes on
  // under the new one, with an ACK proof, and the client learns the new key from our SYN-ACK.
  const previous = provedToPreviousKey(ctx, message, clientIsn, peer, shown);
  if (previous instanceof Refusal) return previous;
  if (previous) return false;
  if (message.signature === null) {
    // Bearer credential and token alone prove nothing fresh: they may come from a capture.
    return refuse('unproven-syn', 'SYN carries neither a proof to our key nor a signature', shown);
  }
  // No more signature verifications per source than its budget.
  if (!ctx.signatureBudget.take(client, nowMs)) return refuse('signature-rate-limited', 'source spent its signature checks', shown);
  if (!synSignatureValid(peer.credential, message.nonce, message.time, peer.tokenDigest, message.signature)) {
    return refuse('bad-proof', 'SYN signature does not verify over this token', shown);
  }
  return false;
}

/**
 * Whether a SYN proof names the key this agent had before its last rotation and is valid under
 * the pair key derived from it (a mismatch there is tampering, as under the current key).
 */
function provedToPreviousKey(ctx: HandshakeContext, syn: SynMessage, clientIsn: number, peer: VerifiedPeer, shown: VerifiedIdentity | null): boolean | Refusal {
  const previous = ctx.previousKey;
  if (syn.proof === null || syn.peerKeyId === null) return false;
  if (previous === null || ctx.now() > previous.untilMs || !previous.keyId.equals(syn.peerKeyId)) return false;
  if (!synProofValid(previous.pairKeys.get(peer.credential), synTranscriptOf(syn, clientIsn, peer.tokenDigest), syn.proof)) {
    return refuse('bad-proof', 'SYN proof to our previous key does not match', shown);
  }
  return true;
}
