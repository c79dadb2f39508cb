// The identity handshake (docs/protocol.md). The client's SYN carries its credential, token,
// nonce and time; the server's SYN-ACK its own plus a proof binding both nonces and ISNs; the
// client's first ACK its proof. Both sides verify the other's proof. When the client already
// knows the server's agent, its SYN carries a proof too and the handshake ends at the SYN-ACK.
//
// This dispatcher sends each packet to its step (client.ts, server.ts); a step fills in the
// Decision, or returns the Refusal that becomes the drop and its reason.
import type { Decision, HandshakeHandler, PacketInfo, TableSize } from '../datapath/handler.ts';
import { destinationAddress } from '../datapath/addresses.ts';
import { TCP_ACK, TCP_RST } from '../datapath/packet.ts';
import type { LocalIdentity } from '../identity/local-identity.ts';
import { TokenError } from '../token/errors.ts';
import type { VerifiedIdentity } from '../token/identity-token.ts';
import type { Authorizer } from './authorizer.ts';
import { clientAck, clientSyn, clientSynAck } from './client.ts';
import { HandshakeContext, MAX_KNOWN_SERVERS, previousKey, type IdentityHandlerOptions } from './context.ts';
import { MAX_HELD } from './held.ts';
import type { KeptTables, KernelPath } from './kernel-path.ts';
import type { PeerVerifier } from './peer-verifier.ts';
import { Refusal, refuse } from './reasons.ts';
import { restoreKernelTables, type TablesRestored } from './restore-kernel.ts';
import { serverAck, serverSyn, serverSynAck } from './server.ts';

export type { IdentityHandlerOptions } from './context.ts';

/**
 * Pod events come in bursts (a rollout, status updates): the kernel's entries are judged again
 * for them at most this often, and once more after the last event of a burst.
 */
export const POD_REJUDGE_INTERVAL_MS = 1000;

export class IdentityHandler implements HandshakeHandler {
  private readonly ctx: HandshakeContext;
  private readonly podRejudge: { timer: NodeJS.Timeout | null; lastMs: number } = { timer: null, lastMs: -Infinity };

  constructor(local: LocalIdentity, verifier: PeerVerifier, authorizer: Authorizer, options: IdentityHandlerOptions) {
    this.ctx = new HandshakeContext(local, verifier, authorizer, options);
  }

  decide(info: PacketInfo, decision: Decision): void {
    const packet = info.packet;
    if ((packet.flags & TCP_RST) !== 0) {
      // A reset ends the attempt; it never carries or needs a token. One that refuses a SYN (a
      // closed port) takes the SYN's filing along, so SYNs to closed ports cannot fill that table.
      if ((packet.flags & TCP_ACK) !== 0) this.ctx.forgetTranslated(destinationAddress(packet), packet.destinationPort, packet.acknowledgment - 1);
      decision.reason = 'ok';
      decision.release = true;
      return;
    }
    const outcome = this.judged(info, decision);
    if (outcome instanceof Refusal) {
      decision.drop(outcome.reason);
      decision.peer = outcome.peer;
    } else {
      decision.peer = outcome;
    }
  }

  /**
   * The step's outcome. A pair key is derived only once a peer is admitted, deep in a step: a
   * credential whose key-agreement key cannot make one (small order) refuses the packet there.
   */
  private judged(info: PacketInfo, decision: Decision): VerifiedIdentity | null | Refusal {
    try {
      return this.step(info, decision);
    } catch (error) {
      if (error instanceof TokenError && error.code === 'bad-claims') return refuse('bad-claims', error.message);
      throw error;
    }
  }

  /** The step for this packet's direction and stage: the peer it verified, or a refusal. */
  private step(info: PacketInfo, decision: Decision): VerifiedIdentity | null | Refusal {
    const ctx = this.ctx;
    if (info.direction === 'egress') {
      if (info.stage === 'syn') return clientSyn(ctx, info, decision);
      // The peer is learned on the way in; an outgoing SYN-ACK or ACK carries ours.
      if (info.stage === 'syn-ack') return serverSynAck(ctx, info, decision);
      return clientAck(ctx, info, decision);
    }
    if (info.stage === 'syn') return serverSyn(ctx, info, decision);
    if (info.stage === 'syn-ack') return clientSynAck(ctx, info, decision);
    return serverAck(ctx, info, decision);
  }

  /** The authorizer used from the next handshake on (policy reload swaps the set inside it). */
  useAuthorizer(authorizer: Authorizer): void {
    this.ctx.authorizer = authorizer;
    this.policyChanged();
  }

  /** The policy set behind the authorizer changed: entries the kernel judges are judged again. */
  policyChanged(): void {
    this.rejudgeKernel();
    this.cloakInKernel();
  }

  /**
   * The node's pods changed (listed, added, relabelled, gone): the kernel's entries for their
   * addresses are judged again, for the workload each address names now.
   */
  localPodsChanged(): void {
    const pending = this.podRejudge;
    if (pending.timer !== null) return;
    const waitMs = pending.lastMs + POD_REJUDGE_INTERVAL_MS - this.ctx.now();
    const run = (): void => {
      pending.timer = null;
      pending.lastMs = this.ctx.now();
      this.rejudgeKernel();
    };
    if (waitMs <= 0) run();
    else pending.timer = setTimeout(run, waitMs).unref();
  }

  /** The node's pods' tokens were issued again: a pod's client entries hold only under the token they rest on. */
  localPodTokensChanged(): void {
    const ctx = this.ctx;
    ctx.kernelPath?.podTokensChanged((address) => ctx.local.tokenForAddress(address)?.packed.signature);
  }

  private rejudgeKernel(): void {
    const ctx = this.ctx;
    ctx.kernelPath?.reauthorize(ctx.authorizer, (address, port) => ctx.localAt(address, port));
  }

  /**
   * This agent's key-agreement key before its last rotation, while it is honoured (PKCS#8 DER),
   * for a restart to go on honouring it; null when there is none.
   */
  previousKeyToKeep(): { privateKey: Buffer; untilSeconds: number } | null {
    const untilSeconds = this.previousKeyUntil();
    if (untilSeconds === null) return null;
    return { privateKey: this.ctx.previousKey!.own.kex.export({ format: 'der', type: 'pkcs8' }), untilSeconds };
  }

  /** Unix seconds until which SYN proofs to the key before the last rotation are honoured; null when none is. */
  previousKeyUntil(): number | null {
    const previous = this.ctx.previousKey;
    return previous === null || previous.untilMs <= this.ctx.now() ? null : Math.floor(previous.untilMs / 1000);
  }

  /** The kernel tables a previous run saved, back into the kernel path as far as it still holds. */
  restoreKernelTables(saved: KeptTables): TablesRestored {
    return restoreKernelTables(this.ctx, saved);
  }

  /** From now on, tell `path` of every client workload proven at first contact (null: stop). */
  useKernelPath(path: KernelPath | null): void {
    this.ctx.kernelPath = path;
    this.cloakInKernel();
  }

  /**
   * The ports where policy refuses every peer without identity, for the kernel to drop such SYNs
   * before the queue. Not on a node with pods: their ports share the node's, and the kernel
   * cannot tell a pod's destination from the node's.
   */
  private cloakInKernel(): void {
    const { kernelPath, authorizer, options } = this.ctx;
    if (kernelPath === null) return;
    const local = this.ctx.local;
    kernelPath.cloak(options.localPods !== undefined ? () => false : (port) => authorizer.closedToAnonymous(local.tokenForPort(port).localAttributes, port));
  }

  /**
   * Rotation: new credential, keys and tokens for every new handshake. Handshakes in flight
   * finish with the pair keys they started with; released connections never notice.
   */
  useIdentity(local: LocalIdentity): void {
    const ctx = this.ctx;
    if (!local.keyId.equals(ctx.local.keyId)) {
      // Clients that know the old key still prove their SYNs to it; honour that while it lives.
      const old = ctx.local;
      ctx.previousKey = previousKey({ kex: old.kex, kexRaw: old.kexRaw }, old.credential.expiresAt * 1000);
      // The kernel's keys derive from the old pair keys: they hold while the old key does, and
      // without them a client's next fast SYN would meet a silent server for a retransmission timeout.
      ctx.kernelPath?.retire(old.credential.expiresAt);
    } else {
      // Same key: what peers' kernels hold stays valid. Our own workloads may have changed, so
      // our kernel stops proving them; each takes one first contact (no fallback delay).
      ctx.kernelPath?.forgetOwnWorkloads();
    }
    ctx.local = local;
    ctx.knownServers.clear();
    this.cloakInKernel();
  }

  /** Forget which agents serve which addresses: the next SYN to each takes the full handshake. */
  forgetServers(): void {
    this.ctx.knownServers.clear();
    this.ctx.kernelPath?.forgetAll();
  }

  stats(): Record<string, number> {
    return { flows: this.ctx.flows.size, nonces: this.ctx.nonces.size, knownServers: this.ctx.knownServers.size };
  }

  /** Entries and capacity of every table the handshake holds. */
  tables(): Record<string, TableSize> {
    const ctx = this.ctx;
    return {
      flows: { entries: ctx.flows.size, capacity: ctx.flows.limit },
      'translated-flows': { entries: ctx.translatedFlows.size, capacity: ctx.translatedFlows.limit },
      nonces: { entries: ctx.nonces.size, capacity: ctx.nonces.limit },
      'known-servers': { entries: ctx.knownServers.size, capacity: MAX_KNOWN_SERVERS },
      'held-segments': { entries: ctx.heldCount, capacity: MAX_HELD },
      'decision-memo': ctx.authorizer.memoSize,
      'signature-budgets': { entries: ctx.signatureBudget.size, capacity: ctx.signatureBudget.capacity },
    };
  }
}
