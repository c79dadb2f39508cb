// `policy explain`: the verdict, the deciding rule, and the rules that matched or nearly did,
// computed from the same PolicySet the agent evaluates (a property test keeps them in step).
import type { Direction } from './model.ts';
import { failingMatchers, ruleMatchesPeer, type PolicyQuery, type PolicySet } from './policy-set.ts';
import { evaluateConnection, type ConnectionQuery, type ConnectionVerdict } from './run-tests.ts';

export interface RuleExplanation {
  rule: string;
  file: string;
  line: number;
  action: string;
  mode: string;
  status: 'decided' | 'matched' | 'near' | 'not-matched';
  /** For near misses: the one condition that failed. */
  missing: string[];
}

export interface DirectionExplanation {
  direction: Direction;
  selectingPolicies: string[];
  rules: RuleExplanation[];
}

export interface Explanation {
  verdict: ConnectionVerdict;
  ingress: DirectionExplanation;
  egress: DirectionExplanation;
}

function explainDirection(set: PolicySet, query: PolicyQuery, decided: string | null): DirectionExplanation {
  const applicable = set.applicable(query.direction, query.local);
  const rules: RuleExplanation[] = (applicable?.rules ?? []).map((rule) => {
    const missing: string[] = [];
    if (rule.ports !== null && !rule.ports.has(query.port)) missing.push(`port in [${[...rule.ports].join(', ')}]`);
    if (query.peer !== null) {
      if (rule.peer === null) missing.push(`a peer without identity from ${rule.networkText.join(', ')}`);
      else missing.push(...failingMatchers(rule.peer, query.peer).map((m) => m.text));
    } else if (rule.networks === null) {
      missing.push('a peer with an identity');
    } else if (!ruleMatchesPeer({ ...rule, ports: null }, query)) {
      missing.push(`peer address in ${rule.networkText.join(', ')}`);
    }
    const status = rule.id === decided ? 'decided' : missing.length === 0 ? 'matched' : missing.length === 1 ? 'near' : 'not-matched';
    return { rule: rule.id, file: rule.policy.file, line: rule.line, action: rule.action, mode: rule.mode, status, missing };
  });
  return { direction: query.direction, selectingPolicies: set.selecting(query.local).map((p) => p.name).sort(), rules };
}

export function explainConnection(set: PolicySet, query: ConnectionQuery): Explanation {
  const verdict = evaluateConnection(set, query);
  const peerOf = (attributes: ConnectionQuery['from']) => (attributes['synpass.subject'] === undefined ? null : attributes);
  return {
    verdict,
    ingress: explainDirection(
      set,
      { direction: 'ingress', local: query.to, peer: peerOf(query.from), peerAddress: query.fromAddress, port: query.port },
      verdict.ingress.rule,
    ),
    egress: explainDirection(
      set,
      { direction: 'egress', local: query.from, peer: peerOf(query.to), peerAddress: query.toAddress, port: query.port },
      verdict.egress.rule,
    ),
  };
}
