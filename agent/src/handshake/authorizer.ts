// Who may connect: the question the identity handshake asks at the server's SYN (ingress) and
// at the client's SYN-ACK (egress). Answered by the policy engine, or by the simple admission
// list of the agent configuration when no policy directory is configured.
import type { Attributes } from '../policy/model.ts';
import type { PolicySet } from '../policy/policy-set.ts';
import type { VerifiedIdentity } from '../token/identity-token.ts';
import type { Admission } from './admission.ts';
import type { TableSize } from '../datapath/handler.ts';

export interface AuthorizationQuery {
  /** Attributes of the local workload the connection belongs to. */
  local: Attributes;
  peer: VerifiedIdentity | null;
  peerAddress: string;
  port: number;
}

export interface Authorization {
  allowed: boolean;
  rule: string | null;
  revision: string | null;
  /** Observe mode: the rule that would have dropped the connection. */
  wouldDrop: string | null;
  /** The port is not governed at all: an identity-less peer is simply let through. */
  unrestricted: boolean;
}

export interface Authorizer {
  ingress(query: AuthorizationQuery): Authorization;
  egress(query: AuthorizationQuery): Authorization;
  /** Remembered decisions and how many may be (none for the admission list). */
  readonly memoSize: TableSize;
  /** Whether every peer without identity, from any address, is refused at `port` of `local` (the kernel may drop such SYNs itself). */
  closedToAnonymous(local: Attributes, port: number): boolean;
}

export class AdmissionAuthorizer implements Authorizer {
  readonly memoSize: TableSize = { entries: 0, capacity: 0 };

  constructor(private readonly admission: Admission) {}

  ingress(query: AuthorizationQuery): Authorization {
    const allowed = query.peer === null ? this.admission.admitsWithoutIdentity(query.peerAddress, query.port) : this.admission.admitsIdentity(query.peer, query.port);
    return { allowed, rule: null, revision: null, wouldDrop: null, unrestricted: !this.admission.isProtected(query.port) };
  }

  egress(): Authorization {
    return { allowed: true, rule: null, revision: null, wouldDrop: null, unrestricted: true };
  }

  closedToAnonymous(_local: Attributes, port: number): boolean {
    return this.admission.closedToAnonymous(port);
  }
}

/** Decides with the current PolicySet; `current` is swapped whole on reload. */
export class PolicyAuthorizer implements Authorizer {
  private readonly memo = new DecisionMemo();

  constructor(readonly current: () => PolicySet) {}

  get memoSize(): TableSize {
    return { entries: this.memo.size, capacity: MEMO_LIMIT };
  }

  closedToAnonymous(local: Attributes, port: number): boolean {
    return this.current().closedToAnonymous(local, port);
  }

  private decide(direction: 'ingress' | 'egress', query: AuthorizationQuery): Authorization {
    const set = this.current();
    const remembered = this.memo.recall(set, direction, query);
    if (remembered !== undefined) return remembered;
    const verdict = set.evaluate({
      direction,
      local: query.local,
      peer: query.peer?.attributes ?? null,
      peerAddress: query.peerAddress,
      port: query.port,
    });
    const authorization: Authorization = {
      allowed: verdict.allowed,
      rule: verdict.rule,
      revision: verdict.revision,
      wouldDrop: verdict.wouldDrop,
      unrestricted: verdict.decidedBy === 'no-policy',
    };
    this.memo.remember(set, direction, query, authorization);
    return authorization;
  }

  ingress(query: AuthorizationQuery): Authorization {
    return this.decide('ingress', query);
  }

  egress(query: AuthorizationQuery): Authorization {
    return this.decide('egress', query);
  }
}

const NO_PEER = {};
const MEMO_LIMIT = 65_536;

/**
 * A policy decision is a pure function of the policy set, the direction, the local workload's
 * attributes, the peer's identity, the port and, for a peer without identity only, the peer's
 * address (a rule's networks match only such peers: ruleMatchesPeer). Local attributes and peer
 * identities are the same objects from one connection to the next (they come from the token
 * caches), so a repeated decision costs a few lookups instead of a rule walk, and one peer's
 * decision serves it from every address: a policy edit that judges a full kernel table again
 * walks the rules once per peer and port, not once per entry. Forgotten whole when the set
 * changes or the memo fills.
 */
class DecisionMemo {
  private policySet: PolicySet | null = null;
  private byLocal = new WeakMap<Attributes, WeakMap<object, Map<string, Authorization>>>();
  size = 0;

  private static key(direction: 'ingress' | 'egress', query: AuthorizationQuery): string {
    const port = `${direction === 'ingress' ? 'i' : 'e'}${query.port}`;
    return query.peer === null ? `${port}|${query.peerAddress}` : port;
  }

  recall(set: PolicySet, direction: 'ingress' | 'egress', query: AuthorizationQuery): Authorization | undefined {
    if (set !== this.policySet) return undefined;
    return this.byLocal.get(query.local)?.get(query.peer ?? NO_PEER)?.get(DecisionMemo.key(direction, query));
  }

  remember(set: PolicySet, direction: 'ingress' | 'egress', query: AuthorizationQuery, authorization: Authorization): void {
    if (set !== this.policySet || this.size >= MEMO_LIMIT) {
      this.policySet = set;
      this.byLocal = new WeakMap();
      this.size = 0;
    }
    let byPeer = this.byLocal.get(query.local);
    if (byPeer === undefined) {
      byPeer = new WeakMap();
      this.byLocal.set(query.local, byPeer);
    }
    const peer = query.peer ?? NO_PEER;
    let decisions = byPeer.get(peer);
    if (decisions === undefined) {
      decisions = new Map();
      byPeer.set(peer, decisions);
    }
    decisions.set(DecisionMemo.key(direction, query), authorization);
    this.size += 1;
  }
}
