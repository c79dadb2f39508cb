// The closed set of verdict reasons. Each is a metric label (synpass_verdicts_total{reason}), a
// flow-log field and a row of docs/operations.md's reason table, which a test compares with this
// list. A reason used anywhere in code must be a key here, and a key cannot be added without its
// line of documentation: a new reason does not compile until it is described.
import type { ParseStatus } from './packet.ts';

interface ReasonDoc {
  /** The verdict this reason comes with ('either': an observed or held outcome, see the text). */
  verdict: 'accept' | 'drop';
  /** One line for the docs table. */
  text: string;
}

export const REASONS = {
  // Accepted.
  ok: { verdict: 'accept', text: 'the peer proved its identity (first contact) and policy allows it, or a packet of a handshake already judged' },
  'ok-fast': { verdict: 'accept', text: 'a known peer proved itself with the pair key, and policy allows it' },
  'ok-kernel': { verdict: 'accept', text: 'the kernel fast path: a fast SYN sent, a fast SYN or its SYN-ACK proven and admitted, or on a node a SYN between two of its pods judged before, with no queue trip' },
  'ok-local': { verdict: 'accept', text: 'two pods of this node, or a pod of this node and the node\'s own workload, judged on the node with both identities and no token' },
  'unprotected-port': { verdict: 'accept', text: 'the port is not protected (admission without policy)' },
  'allowed-without-identity': { verdict: 'accept', text: 'a peer without identity, allowed by a network rule' },
  'peer-without-agent': { verdict: 'accept', text: 'a SYN-ACK from a server with no agent, to a connection policy let out without identity' },
  'observe-would-drop': { verdict: 'accept', text: 'a rule in observe mode would have dropped it (flow log: wouldDrop names it)' },
  'no-token': { verdict: 'accept', text: 'pass-through mode: a peer without an agent, let through untouched' },
  // Dropped by the datapath before any handler.
  truncated: { verdict: 'drop', text: 'the packet is shorter than its headers say' },
  'bad-ip-version': { verdict: 'drop', text: 'neither IPv4 nor IPv6' },
  'bad-ip-header': { verdict: 'drop', text: 'an IP header that cannot be read' },
  'bad-ip-length': { verdict: 'drop', text: 'the IP length disagrees with the packet' },
  'ip-fragment': { verdict: 'drop', text: 'a fragment: a handshake packet is never fragmented' },
  'not-tcp': { verdict: 'drop', text: 'a queued packet that is not TCP' },
  'bad-tcp-header': { verdict: 'drop', text: 'a TCP header that cannot be read' },
  'bad-tcp-options': { verdict: 'drop', text: 'TCP options that do not walk to the end of the header' },
  'bad-token-area': { verdict: 'drop', text: 'a marker whose token area is malformed' },
  'truncated-capture': { verdict: 'drop', text: 'only part of the packet reached the agent, so it cannot be rewritten' },
  'bad-checksum': { verdict: 'drop', text: 'a marked packet whose TCP checksum is wrong (detaching would launder it)' },
  'option-space': { verdict: 'drop', text: 'no room for the marker in the 40 bytes of TCP options' },
  mtu: { verdict: 'drop', text: 'the packet with its token would exceed the configured MTU' },
  'ip-length': { verdict: 'drop', text: 'the packet with its token would exceed the 16-bit IP length' },
  'no-marker': { verdict: 'drop', text: 'a token detach on a packet without a marker' },
  'buffer-too-small': { verdict: 'drop', text: 'the rewritten packet does not fit the output buffer' },
  'not-parsed': { verdict: 'drop', text: 'a rewrite of a packet that was not parsed' },
  'handler-error': { verdict: 'drop', text: 'the handler failed on this packet (a bug; it is dropped, never let through)' },
  // Dropped by the handshake.
  'bad-token': { verdict: 'drop', text: 'pass-through mode: a token other than the test token' },
  'no-identity': { verdict: 'drop', text: 'a peer without identity, and no rule allows it (the kernel fast path drops such SYNs itself where no rule could, and, while a stopped agent keeps its programs, SYNs whose first-contact marker no agent is there to check)' },
  'not-allowed': { verdict: 'drop', text: 'the peer proved its identity, and policy does not allow it (in the kernel: since a policy edit)' },
  'malformed-handshake': { verdict: 'drop', text: 'a token area that is not a well-formed handshake message' },
  'unsupported-version': { verdict: 'drop', text: 'a handshake message of a version this agent does not speak' },
  'malformed-token': { verdict: 'drop', text: 'a credential or token that is not a well-formed JWS' },
  'bad-alg': { verdict: 'drop', text: 'a signature algorithm outside the allow-list (none, HMAC, ...)' },
  'missing-kid': { verdict: 'drop', text: 'a credential without a key id' },
  'bad-signature': { verdict: 'drop', text: 'a credential whose signature does not verify (a token is proven by the SYN signature or proof over its digest: `bad-proof`)' },
  'bad-claims': { verdict: 'drop', text: 'a credential or token with missing or malformed claims (a key-agreement key of small order among them)' },
  'unknown-key': { verdict: 'drop', text: 'a credential signed by a key no trust bundle holds' },
  'untrusted-domain': { verdict: 'drop', text: 'a trust domain this agent has no bundle for' },
  'expired-token': { verdict: 'drop', text: 'the workload token has expired' },
  'expired-credential': { verdict: 'drop', text: 'the agent credential has expired' },
  'revoked-credential': { verdict: 'drop', text: 'the agent credential, or its signing key, is on the deny list (identity.denyList)' },
  'not-yet-valid': { verdict: 'drop', text: 'a credential or token from the future' },
  'namespace-not-allowed': { verdict: 'drop', text: 'an attribute outside the namespaces the credential allows' },
  'token-credential-mismatch': { verdict: 'drop', text: 'a token not signed by the key its credential binds' },
  'stale-timestamp': { verdict: 'drop', text: 'a SYN (or fast SYN, in the kernel) whose time is outside the replay window' },
  'replayed-syn': { verdict: 'drop', text: 'a SYN nonce seen before within the replay window, or a fast SYN (peer, id, ISN, time) the kernel saw before' },
  'replayed-ack': { verdict: 'drop', text: 'a first ACK for no pending handshake, or one seen before' },
  'bad-proof': { verdict: 'drop', text: 'a proof (pair-key MAC, signature, or the kernel fast path\'s SYN or SYN-ACK MAC, missing or wrong) that does not verify' },
  'unproven-syn': { verdict: 'drop', text: 'a SYN with neither a proof to our key nor a signature' },
  'unknown-flow': { verdict: 'drop', text: 'a SYN-ACK that no handshake this agent opened awaits (another ISN, or its record gone after handshake.timeoutSeconds)' },
  'flow-table-full': { verdict: 'drop', text: 'the table of handshakes in progress is full' },
  'replay-cache-full': { verdict: 'drop', text: 'the replay cache is full of nonces still inside the window' },
  'signature-rate-limited': { verdict: 'drop', text: 'a first-contact SYN whose source spent its signature checks of this second (`handshake.signatureChecksPerSource`)' },
  // Dropped by the kernel fast path (read from its counters).
  'unknown-fast-peer': { verdict: 'drop', text: 'a fast SYN naming a workload this server\'s kernel holds no key for, or one whose entry has expired (the client falls back to first contact on its retransmit)' },
  // Dropped by the kernel before the queue, counted from the rule at each rule check.
  'source-rate-limited': { verdict: 'drop', text: 'an incoming packet on its way to the queue above its source\'s rate (`datapath.queueRatePerSource`), dropped by the kernel' },
} as const satisfies Record<string, ReasonDoc>;

export type Reason = keyof typeof REASONS;

/** Every parse failure is a reason: this fails to compile if ParseStatus grows a new one. */
export function parseFailureReason(status: Exclude<ParseStatus, 'ok'>): Reason {
  return status;
}
