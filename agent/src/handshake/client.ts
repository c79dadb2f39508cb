// The client end of the identity handshake: the SYN leaving with this workload's credential,
// token and proof (or signature), the server's SYN-ACK verified on its way in, and the first ACK
// leaving with the client's proof. Each step fills the Decision, or returns why it refuses.
import { destinationAddress, sourceAddress } from '../datapath/addresses.ts';
import type { Decision, PacketInfo } from '../datapath/handler.ts';
import { ackProof, derivePairKey, synAckProofValid, synProof } from '../protocol/proofs.ts';
import { signSyn } from '../protocol/syn-signature.ts';
import { deriveFastKey } from '../protocol/fast-keys.ts';
import { tokenDigest } from '../protocol/token-digest.ts';
import { encodeTransient, FLAG_FAST, FLAG_KERNEL, FLAG_SYN_PROOF, FLAG_SYN_SIGNATURE, MessageType, type SynMessage } from '../protocol/wire.ts';
import type { VerifiedIdentity } from '../token/identity-token.ts';
import { judgeBetweenPods, routeInKernel, serviceInKernel } from './between-pods.ts';
import { ackTranscript, synAckFlow, type HandshakeContext } from './context.ts';
import { flowKey } from './handshake-state.ts';
import { Refusal, refuse } from './reasons.ts';

export function clientSyn(ctx: HandshakeContext, info: PacketInfo, decision: Decision): VerifiedIdentity | null | Refusal {
  const packet = info.packet;
  const server = destinationAddress(packet);
  const client = sourceAddress(packet);
  const pods = ctx.options.localPods;
  const serverPod = pods?.identityOf(server);
  const clientPod = serverPod === undefined ? undefined : pods?.identityOf(client);
  if (serverPod !== undefined && clientPod !== undefined) {
    // A local pod's SYN, DNATed to another pod of this node on its way (a service address): both
    // are known here, no token goes into the pod. Judged here, its SYN-ACK will not be, so the
    // filing its way in made (serverSyn) goes now. The rules queue it here again when the kernel
    // deferred it past the DNAT (its service route) and holds no pair for the pod it reached.
    const filed = ctx.takeTranslated(client, packet.sourcePort, packet.sequence);
    const pair = { serverPod, clientPod, clientAddress: client, serverAddress: server, port: packet.destinationPort };
    const judged = judgeBetweenPods(ctx, decision, pair);
    if (!(judged instanceof Refusal) && decision.wouldDrop === null) serviceInKernel(ctx, pair, filed);
    return judged;
  }
  if (serverPod !== undefined) {
    // On its way into a pod of this node, queued again because the target networks cover the
    // pods. From another host, it was judged for the pod where it came in (serverSyn, or the
    // kernel's fast path); the node's own processes reach its pods as when the pods are no
    // target. Either way it goes on as it is: no token goes into a pod.
    decision.reason = 'ok';
    return null;
  }
  if (pods !== undefined && pods.identityOf(client) === undefined && !pods.isNodeAddress(client)) {
    // Another host's SYN the node routes on (a service address or node port DNATed to a pod of
    // another node): judged where it came in, it is not the node's to speak for. It leaves as
    // it came, without the token its sender may have put in, so the far end sees no identity
    // rather than the node's.
    decision.reason = 'ok';
    return null;
  }
  if (pods?.identityOf(client) !== undefined && ctx.options.isTarget?.(server) === false) {
    // A pod's SYN the kernel deferred past the DNAT, which sent it outside the target networks:
    // it leaves as it would have without the deferral, without a token.
    decision.reason = 'ok';
    return null;
  }
  const key = flowKey(client, packet.sourcePort, server, packet.destinationPort);
  const existing = ctx.flows.get(key);
  if (existing?.syn && existing.clientIsn === packet.sequence) {
    // A retransmitted SYN carries the same message, so the server can recognise it. An
    // unanswered fast SYN may have met a server whose key changed and which therefore cannot
    // check its proof: the retransmit adds the signature a first-contact SYN carries.
    if (existing.fast) ctx.addSignature(existing.syn);
    ctx.attach(decision, encodeTransient(existing.syn));
    decision.track = true;
    decision.reason = 'ok';
    return null;
  }
  // A pod this node routes for speaks as itself; otherwise the workload whose cgroup opened the
  // connection does (the kernel fast path says which), or else the owner of the local socket.
  const pod = ctx.local.tokenForAddress(client);
  const workload = pod === undefined ? (ctx.kernelPath?.takeConnectionWorkload(client, packet.sourcePort, packet.sequence) ?? 0) : 0;
  const own = pod ?? ctx.local.tokenForOwner(info.uid, workload);
  const known = ctx.knownServers.get(server);
  const presigned = known ? null : ctx.presignedSyns.take(ctx.local.signKey, own.packed);
  const nonce = presigned?.nonce ?? ctx.noncePool.next();
  const time = presigned?.time ?? Math.floor(ctx.now() / 1000);
  // A known server checks the SYN proof under the pair key; any other gets the agent's
  // signature (one signing per first-contact connection, made ahead when it can be; none once
  // the pair is known).
  const syn: SynMessage = {
    type: MessageType.Syn,
    flags: known ? FLAG_SYN_PROOF : FLAG_SYN_SIGNATURE,
    credential: ctx.local.packedCredential,
    token: own.packed,
    nonce,
    time,
    peerKeyId: known?.keyId ?? null,
    proof: known ? synProof(known.pairKey, { nonce, time, clientIsn: packet.sequence, tokenDigest: tokenDigest(own.packed) }) : null,
    signature: known ? null : (presigned?.signature ?? signSyn(ctx.local.signKey, nonce, time, tokenDigest(own.packed))),
  };
  const stored = ctx.flows.set(key, {
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
    owner: pod !== undefined ? { uid: -1, workload: 0, pod: client } : workload > 0 || info.uid >= 0 ? { uid: info.uid, workload } : null,
    ownIdentity: ctx.local,
    expiresAt: ctx.now() + ctx.options.handshakeTimeoutMs,
  });
  // Filed for a SYN-ACK to a source NAT's address too. A pod's SYN, filed on its way in to the
  // node (serverSyn) for an answer without a token, has its flow now: that filing goes. Sent to a
  // service address the node DNATed to this server, its next ones there are queued here only.
  const filed = pod === undefined ? undefined : ctx.takeTranslated(client, packet.sourcePort, packet.sequence);
  if (!stored || !ctx.fileTranslated(server, packet.destinationPort, packet.sequence, key, server, packet.destinationPort)) return refuse('flow-table-full');
  const sender = filed === undefined ? undefined : pods?.identityOf(client);
  if (filed !== undefined && sender !== undefined) routeInKernel(ctx, client, sender, server, filed);
  ctx.attach(decision, encodeTransient(syn));
  decision.track = true;
  decision.reason = 'ok';
  return null;
}

export function clientSynAck(ctx: HandshakeContext, info: PacketInfo, decision: Decision): VerifiedIdentity | null | Refusal {
  const packet = info.packet;
  const server = sourceAddress(packet);
  const { key, flow, translated } = synAckFlow(ctx, packet);
  if (flow?.role === 'server') {
    // A local pod answering a SYN this node judged (directly, or through a DNAT to it), on its
    // way in from the pod: it is judged and leaves with the pod's token and proof on the way out
    // (serverSynAck).
    decision.reason = 'ok';
    return null;
  }
  const pods = ctx.options.localPods;
  const serverPod = flow === undefined && info.token === null ? pods?.identityOf(server) : undefined;
  if (flow === undefined && info.token === null && (translated !== null || serverPod !== undefined)) {
    // The answer to a SYN this node passed on without a token: a local pod's, or, on a node, one
    // without identity its policy let by for the address it was sent to. Once the connection
    // is released no retransmitted SYN-ACK comes back, so the entry goes; a refused one stays, so
    // that a retransmit the reset did not stop is refused too.
    const clientAddress = destinationAddress(packet);
    const clientPod = pods?.identityOf(clientAddress);
    // A service address or node port the node DNATed to one of its pods: judged here for that
    // pod, for the port it listens on, between the two pods when the client is one too, else for
    // a client without identity (a token-less SYN the node let by for its own address). Anything
    // else outside the target networks is not ours to judge. A pod's answer is judged so even
    // when no filing names it: the node's NAT gives a connection another source port when two
    // addresses in front of one pod port would otherwise share its reply (the answer then goes
    // to that port), and a filing may be gone; released unjudged, it would let a client the
    // pod's policy refuses in.
    const pair = serverPod === undefined ? null : { serverPod, clientPod: clientPod ?? null, clientAddress, serverAddress: server, port: packet.sourcePort };
    const judged = pair !== null ? judgeBetweenPods(ctx, decision, pair) : null;
    if (judged instanceof Refusal) {
      // The pod holds a half-open connection: ended at once, it retransmits nothing more.
      decision.resetServer = true;
      return judged;
    }
    if (pair !== null && decision.wouldDrop === null) serviceInKernel(ctx, pair, translated ?? undefined);
    ctx.forgetTranslated(clientAddress, packet.destinationPort, packet.acknowledgment - 1);
    if (judged === null) {
      decision.reason = 'ok';
      decision.release = true;
    }
    return judged;
  }
  if (info.token === null) {
    // The server runs no agent: nothing to verify, and nothing to prove in our ACK. Only an
    // answer to a SYN of a handshake in progress: one whose record is gone (past
    // `handshake.timeoutSeconds`, or an agent restart) or that acknowledges another ISN would be
    // judged for the host's own egress instead of the workload's that connected. Dropped, it
    // costs a real connection one SYN retransmit, which opens a handshake again.
    if (flow?.role !== 'client' || packet.acknowledgment !== ((flow.clientIsn + 1) >>> 0)) return refuse('unknown-flow', 'an answer without identity that no handshake in progress awaits');
    ctx.flows.delete(key);
    ctx.forgetTranslated(server, packet.sourcePort, packet.acknowledgment - 1);
    const auth = ctx.authorize(decision, 'egress', { local: flow.local ?? ctx.local.tokenForOwner(-1).localAttributes, peer: null, peerAddress: server, port: packet.sourcePort });
    if (!auth.allowed) return refuse('no-identity', 'egress to a peer without identity is not allowed');
    decision.reason = auth.wouldDrop !== null ? 'observe-would-drop' : 'peer-without-agent';
    decision.release = true;
    return null;
  }
  const message = ctx.decode(info.token);
  if (message instanceof Refusal) return message;
  if (message.type !== MessageType.SynAck) return refuse('malformed-handshake');
  if (flow?.role !== 'client' || packet.acknowledgment !== ((flow.clientIsn + 1) >>> 0)) return refuse('unknown-flow');
  const peer = ctx.verifier.verify(message.credential, message.token);
  if (peer instanceof Refusal) return peer;
  // Our keys rotated after the SYN left (a renewal): the server proves to the key the SYN
  // carried, so this handshake finishes under it; what it teaches is not kept for the new key.
  const own = flow.ownIdentity ?? ctx.local;
  const rotated = own !== ctx.local;
  const pairKey = rotated ? derivePairKey(own.kex, own.kexRaw, peer.credential.kexRaw) : ctx.verifier.pairKey(peer.credential);
  const transcript = { flags: message.flags, clientNonce: flow.clientNonce, serverNonce: message.nonce, clientIsn: flow.clientIsn, serverIsn: packet.sequence, tokenDigest: peer.tokenDigest };
  // The proof covers the token's digest: the server's agent sent exactly this token.
  if (!synAckProofValid(pairKey, transcript, message.proof)) return refuse('bad-proof');
  ctx.verifier.rememberToken(message.token, peer);
  const fast = (message.flags & FLAG_FAST) !== 0;
  if (fast && !flow.fast) return refuse('bad-proof', 'server claimed a fast handshake the client did not offer');
  // Mutual authorization: the sender decides egress once it knows who answered.
  const auth = ctx.authorize(decision, 'egress', { local: flow.local ?? ctx.local.tokenForOwner(-1).localAttributes, peer: peer.identity, peerAddress: server, port: packet.sourcePort });
  if (!auth.allowed) return refuse('not-allowed', 'egress to this identity is not allowed', peer.identity);
  if (!rotated) ctx.rememberServer(server, peer.credential.kexRaw, pairKey);
  if (!rotated && (message.flags & FLAG_KERNEL) !== 0 && ctx.kernelPath !== null && flow.owner != null && flow.syn !== null && auth.wouldDrop === null) {
    // The server's kernel holds this workload now: our kernel sends its next SYNs to this port.
    ctx.kernelPath.useServer({
      serverAddress: server,
      port: packet.sourcePort,
      owner: flow.owner,
      fast: deriveFastKey(pairKey, flow.syn.token.signature),
      peer: peer.identity,
      local: flow.local ?? {},
      expiresAt: Math.min(peer.identity.expiresAt, peer.credential.expiresAt, ctx.local.tokenExpiresAt),
      credential: peer.credential,
      tokenSignature: flow.syn.token.signature,
    });
  }
  flow.serverNonce = Buffer.from(message.nonce);
  flow.serverIsn = packet.sequence;
  flow.pairKey = pairKey;
  flow.peer = peer.identity;
  if (fast) {
    ctx.flows.delete(key);
    ctx.forgetTranslated(server, packet.sourcePort, flow.clientIsn);
    decision.release = true;
    decision.reason = 'ok-fast';
  } else {
    decision.reason = 'ok';
  }
  if (auth.wouldDrop !== null) decision.reason = 'observe-would-drop';
  return peer.identity;
}

export function clientAck(ctx: HandshakeContext, info: PacketInfo, decision: Decision): null {
  const packet = info.packet;
  const key = flowKey(sourceAddress(packet), packet.sourcePort, destinationAddress(packet), packet.destinationPort);
  const flow = ctx.flows.get(key);
  decision.reason = 'ok';
  decision.release = true;
  ctx.presignedSyns.handshakeEnded();
  if (flow?.role !== 'client' || flow.serverNonce === null || flow.pairKey === null) return null;
  // Kept until it expires: a segment racing the release verdict carries the same proof.
  ctx.attach(decision, encodeTransient({ type: MessageType.Ack, proof: ackProof(flow.pairKey, ackTranscript(flow)) }));
  return null;
}
