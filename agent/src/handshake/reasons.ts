// A refused handshake step, and how token and credential errors map to verdict reasons (the
// closed set is datapath/reasons.ts).
import type { Reason } from '../datapath/reasons.ts';
import { SynpassError } from '../errors.ts';
import type { TokenErrorCode } from '../token/errors.ts';
import type { VerifiedIdentity } from '../token/identity-token.ts';

/** A handshake step refused: `code` is the verdict reason. */
export class HandshakeReject extends SynpassError<Reason> {
  override readonly name = 'HandshakeReject';
  constructor(
    readonly reason: Reason,
    message: string = reason,
    /** The peer's verified identity, when the refusal came after verification (for the log). */
    readonly peer: VerifiedIdentity | null = null,
  ) {
    super(reason, message);
  }
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
