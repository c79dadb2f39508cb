// Who may connect: the question the identity handshake asks at the server's SYN (ingress) and
// at the client's SYN-ACK (egress). Answered by the policy engine, or by the simple admission
// list of the agent configuration when no policy directory is configured.
import type { Attributes } from '../policy/model.ts';
import type { PolicySet } from '../policy/policy-set.ts';
import type { VerifiedIdentity } from '../token/identity-token.ts';
import type { Admission } from './admission.ts';

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
}

export class AdmissionAuthorizer implements Authorizer {
  constructor(private readonly admission: Admission) {}

  ingress(query: AuthorizationQuery): Authorization {
    const allowed = query.peer === null ? this.admission.admitsWithoutIdentity(query.peerAddress, query.port) : this.admission.admitsIdentity(query.peer, query.port);
    return { allowed, rule: null, revision: null, wouldDrop: null, unrestricted: !this.admission.isProtected(query.port) };
  }

  egress(): Authorization {
    return { allowed: true, rule: null, revision: null, wouldDrop: null, unrestricted: true };
  }
}

/** Decides with the current PolicySet; `current` is swapped whole on reload. */
export class PolicyAuthorizer implements Authorizer {
  constructor(readonly current: () => PolicySet) {}

  private decide(direction: 'ingress' | 'egress', query: AuthorizationQuery): Authorization {
    const verdict = this.current().evaluate({
      direction,
      local: query.local,
      peer: query.peer?.attributes ?? null,
      peerAddress: query.peerAddress,
      port: query.port,
    });
    return {
      allowed: verdict.allowed,
      rule: verdict.rule,
      revision: verdict.revision,
      wouldDrop: verdict.wouldDrop,
      unrestricted: verdict.decidedBy === 'no-policy',
    };
  }

  ingress(query: AuthorizationQuery): Authorization {
    return this.decide('ingress', query);
  }

  egress(query: AuthorizationQuery): Authorization {
    return this.decide('egress', query);
  }
}
