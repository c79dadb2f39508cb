// Two pods of this node: both ends are known here, so no token travels, and the decision is the
// mutual one (the server pod's ingress, the client pod's egress).
import type { Decision } from '../datapath/handler.ts';
import type { VerifiedIdentity } from '../token/identity-token.ts';
import type { HandshakeContext } from './context.ts';
import { type Refusal, refuse } from './reasons.ts';

export interface BetweenPods {
  serverPod: VerifiedIdentity;
  /** Null: the client is no pod of this node (it has no identity here). */
  clientPod: VerifiedIdentity | null;
  clientAddress: string;
  serverAddress: string;
  /** The server pod's port. */
  port: number;
}

/** Fills the decision (accept and release, logged from the server pod's side) or refuses; returns the client pod. */
export function judgeBetweenPods(ctx: HandshakeContext, decision: Decision, { serverPod, clientPod, clientAddress, serverAddress, port }: BetweenPods): VerifiedIdentity | null | Refusal {
  const ingress = ctx.authorize(decision, 'ingress', { local: serverPod.attributes, peer: clientPod, peerAddress: clientAddress, port });
  if (!ingress.allowed) return refuse(clientPod === null ? 'no-identity' : 'not-allowed', 'pod ingress not allowed', clientPod);
  if (clientPod !== null) {
    const egress = ctx.authorize(decision, 'egress', { local: clientPod.attributes, peer: serverPod, peerAddress: serverAddress, port });
    // Logged from the client pod's side (its rule refused): the peer is the server.
    if (!egress.allowed) return refuse('not-allowed', 'pod egress not allowed', serverPod);
    // Logged from the server pod's side, with the ingress rule unless egress had the say.
    decision.local = serverPod.attributes;
    if (ingress.rule !== null) {
      decision.rule = ingress.rule;
      decision.revision = ingress.revision;
    }
    decision.wouldDrop ??= ingress.wouldDrop;
  }
  decision.reason = decision.wouldDrop !== null ? 'observe-would-drop' : 'ok-local';
  decision.release = true;
  return clientPod;
}

/**
 * Two pods judged at a SYN addressed to the server pod itself (`judgeBetweenPods` admitted it,
 * not only observed it): the node's kernel lets the client pod's next SYNs to the port by where
 * they enter the node (kernel-path.ts, PodPair). A SYN sent to a service address names no pod
 * where it enters the node (the DNAT chooses one after): serviceInKernel.
 */
export function pairInKernel(ctx: HandshakeContext, { serverPod, clientPod, clientAddress, serverAddress, port }: BetweenPods): void {
  if (ctx.kernelPath === null || clientPod === null) return;
  const clientToken = ctx.local.tokenForAddress(clientAddress);
  const serverToken = ctx.local.tokenForAddress(serverAddress);
  if (clientToken === undefined || serverToken === undefined) return;
  ctx.kernelPath.admitPodPair({
    clientAddress,
    serverAddress,
    port,
    client: clientPod,
    server: serverPod,
    clientTokenSignature: clientToken.packed.signature,
    serverTokenSignature: serverToken.packed.signature,
    expiresAt: Math.min(clientPod.expiresAt, serverPod.expiresAt),
  });
}

/**
 * Two pods judged at a SYN the node DNATed from `sentTo` (a service address or node port) to the
 * server pod, admitted and not only observed: the pair goes into the kernel as pairInKernel's, and
 * the client pod's route to `sentTo` with it (routeInKernel), where the pair lets its next SYNs by
 * after the DNAT. Without `sentTo` (the filing of the SYN's way in is gone, or the kernel deferred
 * it already), the pair only.
 */
export function serviceInKernel(ctx: HandshakeContext, pair: BetweenPods, sentTo: { address: string; port: number } | undefined): void {
  pairInKernel(ctx, pair);
  if (pair.clientPod === null || sentTo === undefined) return;
  routeInKernel(ctx, pair.clientAddress, pair.clientPod, pair.serverAddress, sentTo);
}

/**
 * A local pod's SYN that the node DNATed from `sentTo` (a service address or node port) to
 * `reached`, admitted: the pod's route to `sentTo` goes into the kernel, which leaves the pod's next
 * SYNs there to the rules after the DNAT (kernel-path.ts, ServiceRoute): let by there for a pair of
 * pods it holds, queued there once otherwise, rather than before the DNAT and again after it.
 */
export function routeInKernel(ctx: HandshakeContext, clientAddress: string, clientPod: VerifiedIdentity, reached: string, sentTo: { address: string; port: number }): void {
  if (ctx.kernelPath === null || sentTo.address === reached) return;
  const clientToken = ctx.local.tokenForAddress(clientAddress);
  if (clientToken === undefined) return;
  ctx.kernelPath.deferServiceRoute({
    clientAddress,
    serviceAddress: sentTo.address,
    port: sentTo.port,
    clientTokenSignature: clientToken.packed.signature,
    expiresAt: clientPod.expiresAt,
  });
}
