// Why a token or credential was refused. Each code is a drop reason and a metric label.
import { SynpassError } from '../errors.ts';

export type TokenErrorCode =
  | 'malformed-token'
  | 'bad-alg' // alg outside the allow-list: none, HMAC, anything unknown
  | 'missing-kid'
  | 'unknown-kid'
  | 'bad-signature'
  | 'expired'
  | 'not-yet-valid'
  | 'untrusted-domain'
  | 'bad-claims'
  | 'namespace-not-allowed';

export class TokenError extends SynpassError<TokenErrorCode> {
  override readonly name = 'TokenError';
}
