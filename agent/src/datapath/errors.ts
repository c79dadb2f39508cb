// Typed errors of the datapath. Callers branch on `code`; context says which packet or rule.
import { SynpassError } from '../errors.ts';

export type DatapathErrorCode =
  | 'option-space' // no room for the marker in the 40-byte TCP option space
  | 'mtu' // the packet with the token would exceed the configured MTU
  | 'ip-length' // the packet would exceed the 16-bit IP length field
  | 'no-marker' // detach on a packet without a marker
  | 'buffer-too-small'
  | 'not-parsed';

export class DatapathError extends SynpassError<DatapathErrorCode> {
  override readonly name = 'DatapathError';
}

export type RulesErrorCode = 'no-iptables' | 'command-failed' | 'unsupported';

export class RulesError extends SynpassError<RulesErrorCode> {
  override readonly name = 'RulesError';
}
