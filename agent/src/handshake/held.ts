// Segments that overtook the ACK carrying the client's proof (the two can leave the client on
// different CPUs). Such a segment waits in the kernel queue for that ACK, bounded in time and
// number, instead of being dropped into a retransmission timeout; it is accepted with the proof
// and dropped without it.
import type { Decision } from '../datapath/handler.ts';
import type { Reason } from '../datapath/reasons.ts';
import type { HandshakeContext, ServerFlow } from './context.ts';

/** How long a segment may wait for its proof, and how many may, per flow and in all. */
export const HOLD_MS = 100;
export const MAX_HELD_PER_FLOW = 4;
export const MAX_HELD = 1024;

/** Holds a proof-less segment of a pending flow; false when the bounds say drop it instead. */
export function holdForProof(ctx: HandshakeContext, flow: ServerFlow, decision: Decision): boolean {
  if ((flow.held?.length ?? 0) >= MAX_HELD_PER_FLOW || ctx.heldCount >= MAX_HELD) return false;
  decision.hold((held) => {
    ctx.heldCount += 1;
    let settled = false;
    const settle = (accepted: boolean, reason: Reason): void => {
      if (settled) return;
      settled = true;
      ctx.heldCount -= 1;
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

/** The proof arrived (or failed): every segment that waited for it goes the same way. */
export function settleHeld(flow: ServerFlow, accepted: boolean, reason: Reason): void {
  const held = flow.held;
  if (held === undefined) return;
  delete flow.held;
  for (const packet of held) {
    if (accepted) packet.accept(reason);
    else packet.drop(reason);
  }
}
