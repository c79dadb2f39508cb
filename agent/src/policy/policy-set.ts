// The one evaluator: compiled once from validated files into an immutable PolicySet, used
// alike by the agent (per handshake), the CLI (test, explain, diff) and CI.
//
// Order: rules apply in policy `order` (lower first, default 1000), then policy name, then the
// rule's position in its policy; the first rule that matches decides. A workload that some
// policy selects and that declares a direction (`ingress:` or `egress:`, even empty) is denied
// by default in that direction; a workload no policy governs in a direction is not restricted.
// A matching deny rule in observe mode lets the connection through and names itself as the
// would-be drop; a default deny is observed when every policy that caused it is in observe mode.
import { type BlockList, isIPv4 } from 'node:net';
import { networkList } from '../cidr.ts';
import { SUBJECT } from './attributes.ts';
import type { LoadedFile } from './load.ts';
import type { Action, Attributes, Direction, Matcher, Mode, PolicyRecord, RuleDocument, Selector } from './model.ts';

export const DEFAULT_ORDER = 1000;

export interface CompiledMatcher {
  attribute: string;
  text: string;
  test(value: string | undefined): boolean;
}

export interface CompiledRule {
  id: string;
  policy: CompiledPolicy;
  index: number;
  action: Action;
  mode: Mode;
  peer: CompiledMatcher[] | null;
  /** The peer selector as written (for diff's workload classes). */
  peerSource: Selector | null;
  networks: BlockList | null;
  networkText: string[];
  ports: ReadonlySet<number> | null;
  line: number;
}

export interface CompiledPolicy {
  name: string;
  order: number;
  mode: Mode;
  file: string;
  line: number;
  selector: CompiledMatcher[];
  selectorSource: Selector;
  ingress: CompiledRule[] | null;
  egress: CompiledRule[] | null;
}

export interface PolicyQuery {
  direction: Direction;
  /** The local workload the decision is about. */
  local: Attributes;
  /** The verified peer identity, or null for a peer without one. */
  peer: Attributes | null;
  peerAddress: string | null;
  port: number;
}

export interface PolicyVerdict {
  allowed: boolean;
  /** 'rule' when a rule decided; otherwise the default that applied. */
  decidedBy: 'rule' | 'default-deny' | 'no-policy';
  rule: string | null;
  file: string | null;
  line: number | null;
  revision: string;
  /** A deny that observe mode let through: the rule (or default-deny) that would have dropped. */
  wouldDrop: string | null;
}

function globToRegExp(glob: string): RegExp {
  const escaped = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${escaped}$`);
}

export function compileMatcher(attribute: string, matcher: Matcher): CompiledMatcher {
  if (typeof matcher === 'string' || 'equals' in matcher) {
    const value = typeof matcher === 'string' ? matcher : matcher.equals;
    return { attribute, text: `${attribute} = ${value}`, test: (v) => v === value };
  }
  if ('in' in matcher) {
    const values = new Set(matcher.in);
    return { attribute, text: `${attribute} in [${matcher.in.join(', ')}]`, test: (v) => v !== undefined && values.has(v) };
  }
  if ('notIn' in matcher) {
    const values = new Set(matcher.notIn);
    return { attribute, text: `${attribute} not in [${matcher.notIn.join(', ')}]`, test: (v) => v !== undefined && !values.has(v) };
  }
  if ('doesNotExist' in matcher) return { attribute, text: `${attribute} does not exist`, test: (v) => v === undefined };
  if ('exists' in matcher) {
    const wanted = matcher.exists;
    return { attribute, text: `${attribute} ${wanted ? 'exists' : 'does not exist'}`, test: (v) => (v !== undefined) === wanted };
  }
  if ('prefix' in matcher) {
    const prefix = matcher.prefix;
    return { attribute, text: `${attribute} starts with ${prefix}`, test: (v) => v !== undefined && v.startsWith(prefix) };
  }
  const pattern = globToRegExp(matcher.glob);
  return { attribute, text: `${attribute} ~ ${matcher.glob}`, test: (v) => v !== undefined && pattern.test(v) };
}

function compileSelector(selector: Selector): CompiledMatcher[] {
  return Object.entries(selector).map(([attribute, matcher]) => compileMatcher(attribute, matcher));
}

export function failingMatchers(matchers: readonly CompiledMatcher[], attributes: Attributes): CompiledMatcher[] {
  return matchers.filter((m) => !m.test(attributes[m.attribute]));
}

function matchesAll(matchers: readonly CompiledMatcher[], attributes: Attributes): boolean {
  for (const m of matchers) if (!m.test(attributes[m.attribute])) return false;
  return true;
}

function compileNetworks(cidrs: string[] | undefined): BlockList | null {
  return cidrs === undefined ? null : networkList(cidrs);
}

function compileRules(policy: CompiledPolicy, record: PolicyRecord, direction: Direction, file: LoadedFile, p: number): CompiledRule[] | null {
  const rules = record[direction];
  if (rules === undefined) return null;
  return rules.map((rule: RuleDocument, index) => {
    const peer = direction === 'ingress' ? rule.from : rule.to;
    const networks = direction === 'ingress' ? rule.fromNetworks : rule.toNetworks;
    return {
      id: `${record.name}/${rule.name ?? `${direction}-${index}`}`,
      policy,
      index,
      action: rule.action,
      mode: rule.mode ?? policy.mode,
      peer: peer === undefined ? null : compileSelector(peer),
      peerSource: peer ?? null,
      networks: compileNetworks(networks),
      networkText: networks ?? [],
      ports: rule.ports === undefined ? null : new Set(rule.ports),
      line: file.positionOf(['policies', p, direction, index]).line,
    };
  });
}

function byOrder(a: CompiledRule, b: CompiledRule): number {
  return a.policy.order - b.policy.order || a.policy.name.localeCompare(b.policy.name) || a.index - b.index;
}

/** A peer with identity is matched by its identity alone, never its address: the agent's decision memo (handshake/authorizer.ts) relies on that. */
export function ruleMatchesPeer(rule: CompiledRule, query: PolicyQuery): boolean {
  if (rule.ports !== null && !rule.ports.has(query.port)) return false;
  if (query.peer !== null) return rule.peer !== null && matchesAll(rule.peer, query.peer);
  if (rule.networks === null || query.peerAddress === null) return false;
  return rule.networks.check(query.peerAddress, isIPv4(query.peerAddress) ? 'ipv4' : 'ipv6');
}

interface Applicable {
  rules: CompiledRule[];
  /** Every governing policy is in observe mode: the default deny is only observed. */
  observedDefault: boolean;
}

export class PolicySet {
  readonly policies: readonly CompiledPolicy[];
  private readonly index = new Map<string, CompiledPolicy[]>();
  private readonly unindexed: CompiledPolicy[] = [];
  private readonly cache = new Map<string, { ingress: Applicable | null; egress: Applicable | null }>();
  /** The agent asks with the same attribute object per local workload: no key to build. */
  private readonly byObject = new WeakMap<Attributes, { ingress: Applicable | null; egress: Applicable | null }>();

  constructor(
    files: readonly LoadedFile[],
    readonly revision: string,
  ) {
    const policies: CompiledPolicy[] = [];
    for (const file of files) {
      file.document.policies?.forEach((record, p) => {
        const policy: CompiledPolicy = {
          name: record.name,
          order: record.order ?? DEFAULT_ORDER,
          mode: record.mode ?? 'enforce',
          file: file.file,
          line: file.positionOf(['policies', p]).line,
          selector: compileSelector(record.selector),
          selectorSource: record.selector,
          ingress: null,
          egress: null,
        };
        policy.ingress = compileRules(policy, record, 'ingress', file, p);
        policy.egress = compileRules(policy, record, 'egress', file, p);
        policies.push(policy);
        // Index by the selector's first exact value, so a decision looks only at policies that
        // can select the workload instead of scanning them all.
        const exact = Object.entries(record.selector).find(([, m]) => typeof m === 'string' || 'equals' in m);
        if (exact === undefined) this.unindexed.push(policy);
        else {
          const value = typeof exact[1] === 'string' ? exact[1] : (exact[1] as { equals: string }).equals;
          const key = `${exact[0]}\0${value}`;
          const bucket = this.index.get(key);
          if (bucket) bucket.push(policy);
          else this.index.set(key, [policy]);
        }
      });
    }
    this.policies = policies;
  }

  get ruleCount(): number {
    return this.policies.reduce((n, p) => n + (p.ingress?.length ?? 0) + (p.egress?.length ?? 0), 0);
  }

  /** Policies that select `local`, in no particular order. */
  selecting(local: Attributes): CompiledPolicy[] {
    const found = new Set<CompiledPolicy>();
    for (const [attribute, value] of Object.entries(local)) {
      for (const policy of this.index.get(`${attribute}\0${value}`) ?? []) if (matchesAll(policy.selector, local)) found.add(policy);
    }
    for (const policy of this.unindexed) if (matchesAll(policy.selector, local)) found.add(policy);
    return [...found];
  }

  /** The ordered rules that govern `local` in `direction` (null: no policy governs it). */
  applicable(direction: Direction, local: Attributes): Applicable | null {
    const known = this.byObject.get(local);
    if (known !== undefined) return known[direction];
    const key = JSON.stringify(Object.entries(local).sort(([a], [b]) => a.localeCompare(b)));
    let entry = this.cache.get(key);
    if (entry === undefined) {
      const selecting = this.selecting(local);
      const build = (d: Direction): Applicable | null => {
        const governing = selecting.filter((p) => p[d] !== null);
        if (governing.length === 0) return null;
        return { rules: governing.flatMap((p) => p[d]!).sort(byOrder), observedDefault: governing.every((p) => p.mode === 'observe') };
      };
      entry = { ingress: build('ingress'), egress: build('egress') };
      if (this.cache.size >= 1024) this.cache.delete(this.cache.keys().next().value!);
      this.cache.set(key, entry);
    }
    this.byObject.set(local, entry);
    return entry[direction];
  }

  /**
   * Whether ingress to `port` of `local` refuses every peer without identity, whatever its
   * address: a policy governs it, its default deny is enforced, and no rule with networks (which
   * alone can match such a peer, allow or observed deny) covers the port.
   */
  closedToAnonymous(local: Attributes, port: number): boolean {
    const applicable = this.applicable('ingress', local);
    if (applicable === null || applicable.observedDefault) return false;
    return !applicable.rules.some((rule) => rule.networks !== null && (rule.ports === null || rule.ports.has(port)));
  }

  evaluate(query: PolicyQuery): PolicyVerdict {
    const applicable = this.applicable(query.direction, query.local);
    const verdict = (allowed: boolean, decidedBy: PolicyVerdict['decidedBy'], rule: CompiledRule | null, wouldDrop: string | null): PolicyVerdict => ({
      allowed,
      decidedBy,
      rule: rule?.id ?? (decidedBy === 'default-deny' ? 'default-deny' : null),
      file: rule?.policy.file ?? null,
      line: rule?.line ?? null,
      revision: this.revision,
      wouldDrop,
    });
    if (applicable === null) return verdict(true, 'no-policy', null, null);
    for (const rule of applicable.rules) {
      if (!ruleMatchesPeer(rule, query)) continue;
      if (rule.action === 'allow') return verdict(true, 'rule', rule, null);
      if (rule.mode === 'observe') return verdict(true, 'rule', rule, rule.id);
      return verdict(false, 'rule', rule, null);
    }
    return applicable.observedDefault ? verdict(true, 'default-deny', null, 'default-deny') : verdict(false, 'default-deny', null, null);
  }
}

/** Attributes of a peer as a test or explain names them: no synpass.subject means no identity. */
export function peerOf(attributes: Attributes): Attributes | null {
  return attributes[SUBJECT] === undefined ? null : attributes;
}
