// A refused handshake step, returned (never thrown) up to the dispatcher, and how token and
// credential errors map to verdict reasons (the closed set is datapath/reasons.ts).
import type { Reason } from '../datapath/reasons.ts';
import type { TokenErrorCode } from '../token/errors.ts';
import type { VerifiedIdentity } from '../token/identity-token.ts';

export class Refusal {
  constructor(
    readonly reason: Reason,
    /** Why, in words, for a debugger or a log. */
    readonly detail: string = reason,
    /** The peer's verified identity, when the refusal came after verification (for the flow log). */
    readonly peer: VerifiedIdentity | null = null,
  ) {}
}

export function refuse(reason: Reason, detail?: string, peer: VerifiedIdentity | null = null): Refusal {
  return new Refusal(reason, detail, peer);
}

export function credentialReason(code: TokenErrorCode): Reason {
  switch (code) {
    case 'expired':
      return 'expired-credential';
    case 'unknown-kid':
      return 'unknown-key';
    default:
      return code;
  }
}

export function tokenReason(code: TokenErrorCode): Reason {
  switch (code) {
    case 'expired':
      return 'expired-token';
    case 'unknown-kid':
      return 'token-credential-mismatch';
    case 'untrusted-domain':
      return 'untrusted-domain';
    default:
      return code;
  }
}
