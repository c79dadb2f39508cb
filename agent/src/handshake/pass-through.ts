// Pass-through mode: the datapath test handler. It attaches a fixed test token to every queued
// outgoing handshake packet and, on the way in, accepts a packet only if its token is exactly
// that blob. No identity, no policy: it proves the packet path on its own.
import type { Decision, HandshakeHandler, PacketInfo } from '../datapath/handler.ts';

const TEST_TOKEN_TEXT = 'synpass pass-through test token v1 ';
/** 120 bytes, the size of a small signed claim set. */
export const PASS_THROUGH_TOKEN: Uint8Array = new TextEncoder().encode(TEST_TOKEN_TEXT.repeat(4).slice(0, 120));

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export class PassThroughHandler implements HandshakeHandler {
  decide(info: PacketInfo, decision: Decision): void {
    if (info.direction === 'egress') {
      decision.token = PASS_THROUGH_TOKEN;
      decision.tokenLength = PASS_THROUGH_TOKEN.length;
      decision.reason = 'ok';
      // The client's SYN starts tracking; its first ACK ends the handshake on this side.
      if (info.stage === 'syn') decision.track = true;
      if (info.stage === 'ack') decision.release = true;
      return;
    }
    if (info.token === null) {
      // A peer without an agent: let its handshake through untouched and stop following it.
      decision.reason = 'no-token';
      decision.release = true;
      return;
    }
    if (!sameBytes(info.token, PASS_THROUGH_TOKEN)) {
      decision.drop('bad-token');
      return;
    }
    decision.reason = 'ok';
    if (info.stage === 'syn') decision.track = true;
    if (info.stage === 'ack') decision.release = true;
  }
}
