// `policy diff`: the reachability matrix between the workload classes the policies name, before
// and after, reduced to the pairs whose verdict changed.
import type { Attributes, Matcher, Selector } from './model.ts';
import type { PolicySet } from './policy-set.ts';
import { evaluateConnection } from './run-tests.ts';
import { SUBJECT } from './attributes.ts';

export interface ReachabilityChange {
  from: Attributes;
  to: Attributes;
  port: number;
  before: boolean;
  after: boolean;
}

function exactValues(selector: Selector): Attributes | null {
  const values: Record<string, string> = {};
  for (const [attribute, matcher] of Object.entries<Matcher>(selector)) {
    if (typeof matcher === 'string') values[attribute] = matcher;
    else if ('equals' in matcher) values[attribute] = matcher.equals;
    else if ('in' in matcher && matcher.in.length > 0) values[attribute] = matcher.in[0]!;
    else if ('glob' in matcher && attribute === SUBJECT) values[attribute] = matcher.glob.replace(/\*/g, 'x').replace(/\?/g, 'x');
    else if ('prefix' in matcher) values[attribute] = `${matcher.prefix}x`;
  }
  return Object.keys(values).length === 0 ? null : values;
}

/** Workload classes: the exact attribute sets that policy selectors and rule peers name. */
export function workloadClasses(sets: readonly PolicySet[]): { classes: Attributes[]; ports: number[] } {
  const seen = new Map<string, Attributes>();
  const ports = new Set<number>();
  const add = (selector: Selector | null) => {
    const values = selector === null ? null : exactValues(selector);
    if (values === null) return;
    const withSubject = values[SUBJECT] === undefined ? { ...values, [SUBJECT]: 'spiffe://class' } : values;
    seen.set(JSON.stringify(Object.entries(withSubject).sort()), withSubject);
  };
  for (const set of sets) {
    for (const policy of set.policies) {
      add(policy.selectorSource);
      for (const rule of [...(policy.ingress ?? []), ...(policy.egress ?? [])]) {
        add(rule.peerSource);
        for (const port of rule.ports ?? []) ports.add(port);
      }
    }
  }
  return { classes: [...seen.values()], ports: [...ports].sort((a, b) => a - b) };
}

export function reachabilityDiff(before: PolicySet, after: PolicySet): ReachabilityChange[] {
  const { classes, ports } = workloadClasses([before, after]);
  const changes: ReachabilityChange[] = [];
  for (const from of classes) {
    for (const to of classes) {
      for (const port of ports.length > 0 ? ports : [0]) {
        const query = { from, fromAddress: null, to, toAddress: null, port };
        const a = evaluateConnection(before, query).allowed;
        const b = evaluateConnection(after, query).allowed;
        if (a !== b) changes.push({ from, to, port, before: a, after: b });
      }
    }
  }
  return changes;
}
