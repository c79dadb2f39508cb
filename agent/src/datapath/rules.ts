// Pure generation of the agent's mangle-table rules as iptables-restore input, and of the
// commands that remove them. No I/O here: iptables.ts runs what this produces.
import { MARKER_KIND } from './marker.ts';
import type { ConnectionMarks } from './marks.ts';

export type IpFamily = 4 | 6;

export const CHAIN_PREFIX = 'SYNPASS-';
export const CHAINS = {
  ingress: 'SYNPASS-IN',
  ingressQueue: 'SYNPASS-IN-Q',
  ingressLimit: 'SYNPASS-IN-LIMIT',
  egress: 'SYNPASS-OUT',
  egressQueue: 'SYNPASS-OUT-Q',
  mark: 'SYNPASS-MARK',
  audit: 'SYNPASS-AUDIT',
} as const;
/** The raw-table chain that takes the kernel fast path's connections out of conntrack. */
export const NOTRACK_CHAIN = 'SYNPASS-NOTRACK';
const COMMENT = 'synpass';
/** Comment of the rule whose kernel counter is the number of SYNs that were never judged. */
export const UNJUDGED_COMMENT = 'synpass-unjudged';
/** Comment of the rule whose kernel counter is the number of packets dropped above their source's rate. */
export const SOURCE_LIMITED_COMMENT = 'synpass-source-limited';
/** Sources the kernel tracks a rate for; an idle one is forgotten after SOURCE_IDLE_MS. */
export const SOURCE_TABLE_MAX = 262_144;
const SOURCE_IDLE_MS = 2_000;

export interface RuleOptions {
  /** First queue number and how many queues to balance across (flows stay on one queue). */
  queueNumber: number;
  queueCount: number;
  /** If no agent listens, accept (--queue-bypass) instead of dropping. */
  failOpen: boolean;
  /** Incoming packets a second per source (IPv4 address, IPv6 /64) let into the queue; 0: no limit. */
  queueRatePerSource: number;
  /** Packets each queue holds: a source's burst is a share of it (sourceBurst). */
  queueMaxLength: number;
  marks: ConnectionMarks;
  /** CIDRs that receive tokens: outgoing SYNs are queued only toward these. */
  targetNetworks: readonly string[];
  /** CIDRs the agent never touches in either direction. */
  excludedNetworks: readonly string[];
  /**
   * The workloads this host routes for are its own (a Kubernetes node's pods): their handshakes
   * are queued too. Otherwise only handshakes to and from this host's own addresses are, and what
   * it routes (containers and VMs in their own network namespaces) passes as if no agent ran.
   */
  routedWorkloads: boolean;
  /** Where the kernel fast path's programs that judge a SYN after a DNAT are pinned, once the rules use them (buildDeferRuleset); absent before. */
  deferPrograms?: DeferPrograms;
}

/** The kernel fast path's programs that iptables' bpf match runs after a DNAT, by their pins. */
export interface DeferPrograms {
  /** Matches a pair of the node's pods the agent judged for the port (synpass_service_backend). */
  backend: string;
  /** Matches a SYN this host DNATed to a server its sender (a node's pod, a local socket) holds a kernel client entry for, then sent fast (synpass_translated_syn). */
  translated: string;
}

function hex(value: number): string {
  return `0x${(value >>> 0).toString(16)}`;
}

/** A source's burst may take at most this share of the queue. */
const QUEUE_SHARE_PER_BURST = 4;

/**
 * Packets a source may send into the queue at once: a second's worth, but at most a quarter of
 * the queue, so that one source's burst cannot fill it however slowly the agent drains it (with a
 * second's worth of a 10,000 a second default in a 4,096 queue, a flood's first burst did).
 */
export function sourceBurst(ratePerSource: number, queueMaxLength: number): number {
  return Math.max(1, Math.min(ratePerSource, Math.floor(queueMaxLength / QUEUE_SHARE_PER_BURST)));
}

/**
 * A token bucket per source in the kernel (hashlimit) in front of the queue, so that one source
 * cannot fill the queue every other source's handshakes need. The bucket holds sourceBurst. Only
 * packets on their way into the queue take it: a released connection's traffic never gets here.
 * A SYN the kernel fast path already charged to its own per-source bucket (a BPF map, same rate
 * and burst) carries `budgeted` and goes straight on.
 */
function sourceLimit(family: IpFamily, options: RuleOptions, queue: string): string[] {
  const budgeted = `${hex(options.marks.budgeted)}/${hex(options.marks.budgeted)}`;
  const rate = options.queueRatePerSource;
  const limit = [
    `--hashlimit-above ${rate}/sec --hashlimit-burst ${sourceBurst(rate, options.queueMaxLength)} --hashlimit-mode srcip --hashlimit-srcmask ${family === 4 ? 32 : 64}`,
    `--hashlimit-name synpass-in --hashlimit-htable-max ${SOURCE_TABLE_MAX} --hashlimit-htable-expire ${SOURCE_IDLE_MS}`,
  ].join(' ');
  return [
    `-A ${CHAINS.ingressLimit} -m mark --mark ${budgeted} ${queue}`,
    `-A ${CHAINS.ingressLimit} -m hashlimit ${limit} -m comment --comment ${SOURCE_LIMITED_COMMENT} -j DROP`,
    `-A ${CHAINS.ingressLimit} ${queue}`,
  ];
}

function queueTarget(options: RuleOptions): string {
  const queue =
    options.queueCount > 1
      ? `--queue-balance ${options.queueNumber}:${options.queueNumber + options.queueCount - 1}`
      : `--queue-num ${options.queueNumber}`;
  return `-j NFQUEUE ${queue}${options.failOpen ? ' --queue-bypass' : ''}`;
}

export function isFamily(cidr: string, family: IpFamily): boolean {
  return family === 6 ? cidr.includes(':') : !cidr.includes(':');
}

/**
 * The ruleset for one address family, as iptables-restore --noflush input.
 * Queued: every packet carrying a marker (so a late duplicate never reaches the kernel with
 * token bytes), incoming SYNs, and the SYN-ACK and first ACK of connections the agent tracks;
 * incoming ones only within their source's rate (SYNPASS-IN-LIMIT drops the rest).
 * Outgoing SYNs are queued only toward target networks. Released connections are never queued,
 * except an incoming SYN, which is judged even when conntrack files it under a released
 * connection: no SYN reaches the host unjudged unless the kernel fails open.
 * With --fail-open, SYNPASS-AUDIT, from INPUT and FORWARD, counts the incoming SYNs that arrive
 * without the `judged` bit: the kernel accepts them unjudged when the queue is full or no agent
 * listens, and it reports that nowhere else. Failing closed, those hooks would cost every packet
 * of the host a test that can never count, so they are not installed.
 */
export function buildRuleset(family: IpFamily, options: RuleOptions): string {
  const { marks } = options;
  const queue = queueTarget(options);
  const pass = `${hex(marks.pass)}/${hex(marks.pass)}`;
  const track = `${hex(marks.track)}/${hex(marks.track)}`;
  const release = `${hex(marks.release)}/${hex(marks.release)}`;
  const judged = `${hex(marks.judged)}/${hex(marks.judged)}`;
  const untracked = `${hex(marks.untracked)}/${hex(marks.untracked)}`;
  const excluded = options.excludedNetworks.filter((cidr) => isFamily(cidr, family));
  const targets = options.targetNetworks.filter((cidr) => isFamily(cidr, family));
  const tag = `-m comment --comment ${COMMENT}`;
  const audited = options.failOpen;
  // Routed traffic is not judged here: it never reaches INPUT, and FORWARD has nothing to count.
  const auditedHooks = options.routedWorkloads ? ['INPUT', 'FORWARD'] : ['INPUT'];
  const limited = options.queueRatePerSource > 0;
  const ingressQueue = limited ? `-j ${CHAINS.ingressLimit}` : queue;
  const chains = Object.values(CHAINS).filter((chain) => (audited || chain !== CHAINS.audit) && (limited || chain !== CHAINS.ingressLimit));
  const lines: string[] = [
    '*mangle',
    ...chains.map((chain) => `:${chain} - [0:0]`),
    // Every TCP packet of the host meets these rules, so they carry no comment: iptables-nft
    // tests a comment through the xtables compatibility layer, per packet. A connection the
    // kernel fast path judged and left out of conntrack (the `untracked` bit) does not jump:
    // native mark and flag tests, no chain. Nor do its incoming SYN and SYN-ACK, which the kernel
    // marks `judged` as it proves them, as the mark chain would; one it leaves unjudged still
    // does (a SYN-ACK with a marker, to be queued). The kernel never gives the bit to another
    // segment that carries a marker.
    `-I PREROUTING 1 -p tcp -m mark ! --mark ${untracked} -j ${CHAINS.ingress}`,
    `-I PREROUTING 2 -p tcp -m tcp --tcp-flags SYN SYN -m mark --mark ${hex(marks.untracked)}/${hex(marks.untracked | marks.judged)} -j ${CHAINS.ingress}`,
    `-I POSTROUTING 1 -p tcp -m mark ! --mark ${untracked} -j ${CHAINS.egress}`,
    // Only SYNs jump: every other packet of the host pays one flags match here.
    ...(audited ? auditedHooks.map((hook) => `-I ${hook} 1 -p tcp -m tcp --tcp-flags SYN,ACK,FIN,RST SYN ${tag} -j ${CHAINS.audit}`) : []),
    // A released connection's packet (most of a host's traffic) returns at once, unless it is a
    // SYN, carries a marker or comes back from a verdict. The connmark test is positive on
    // purpose: it fails for a packet conntrack does not track, which must go on to be judged. The
    // flags test is a match of its own so that iptables-nft compiles it natively.
    `-A ${CHAINS.ingress} -p tcp -m mark ! --mark ${pass} -m connmark --mark ${release} -m tcp ! --tcp-flags SYN,ACK,FIN,RST SYN -m tcp ! --tcp-option ${MARKER_KIND} -j RETURN`,
    // A packet comes back after its verdict (NF_REPEAT) carrying `pass`: record, do not queue.
    `-A ${CHAINS.ingress} -m mark ! --mark ${pass} -j ${CHAINS.ingressQueue}`,
    // A local pod's fast SYN, which the kernel fast path vouched for where it entered the node
    // (`pass` and `judged`, a pair no verdict gives a packet on its way in): it keeps `pass`, so
    // that POSTROUTING lets it by too.
    ...(options.routedWorkloads ? [`-A ${CHAINS.ingress} -m mark --mark ${hex(marks.pass | marks.judged)}/${hex(marks.pass | marks.judged)} -j RETURN`] : []),
    `-A ${CHAINS.ingress} -m mark --mark ${pass} -j ${CHAINS.mark}`,
    `-A ${CHAINS.egress} -m mark ! --mark ${pass} -m connmark --mark ${release} -j RETURN`,
    `-A ${CHAINS.egress} -m mark ! --mark ${pass} -j ${CHAINS.egressQueue}`,
    `-A ${CHAINS.egress} -m mark --mark ${pass} -j ${CHAINS.mark}`,
    `-A ${CHAINS.mark} -m mark --mark ${track} -j CONNMARK --or-mark ${hex(marks.track)}`,
    `-A ${CHAINS.mark} -m mark --mark ${release} -j CONNMARK --or-mark ${hex(marks.release)}`,
    // `untracked` stays: a SYN the kernel fast path accepted for a pod of this node goes on
    // through POSTROUTING, whose hook must not jump for it then (the target networks may cover
    // the pods, and a SYN without conntrack has no connmark to be let by).
    `-A ${CHAINS.mark} -j MARK --and-mark ${hex(~(marks.all & ~marks.untracked))}`,
    `-A ${CHAINS.mark} -j MARK --or-mark ${hex(marks.judged)}`,
    `-A ${CHAINS.ingressQueue} -i lo -j RETURN`,
    ...excluded.map((cidr) => `-A ${CHAINS.ingressQueue} -s ${cidr} -j RETURN`),
    // A handshake this host only routes is not its own: its policy and identity are not the
    // routed workload's (a node's pods excepted, whose handshakes the agent judges as theirs).
    ...(options.routedWorkloads ? [] : [`-A ${CHAINS.ingressQueue} -m addrtype ! --dst-type LOCAL -j RETURN`]),
    `-A ${CHAINS.ingressQueue} -p tcp -m tcp --tcp-option ${MARKER_KIND} ${ingressQueue}`,
    `-A ${CHAINS.ingressQueue} -p tcp -m tcp --tcp-flags SYN,ACK,FIN,RST SYN ${ingressQueue}`,
    `-A ${CHAINS.ingressQueue} -m connmark --mark ${release} -j RETURN`,
    `-A ${CHAINS.ingressQueue} -p tcp -m connmark --mark ${track} -m tcp --tcp-flags ACK ACK ${ingressQueue}`,
    ...(limited ? sourceLimit(family, options, queue) : []),
    `-A ${CHAINS.egressQueue} -o lo -j RETURN`,
    ...excluded.map((cidr) => `-A ${CHAINS.egressQueue} -d ${cidr} -j RETURN`),
    `-A ${CHAINS.egressQueue} -m connmark --mark ${release} -j RETURN`,
    // A connection the agent follows may be answered from an address this host routes to (a port
    // it publishes by DNAT for a container): that answer is queued. A SYN from such an address
    // is the routed workload's own: it passes.
    `-A ${CHAINS.egressQueue} -p tcp -m connmark --mark ${track} -m tcp --tcp-flags ACK ACK ${queue}`,
    ...(options.routedWorkloads ? [] : [`-A ${CHAINS.egressQueue} -m addrtype ! --src-type LOCAL -j RETURN`]),
    ...targets.map(
      (cidr) => `-A ${CHAINS.egressQueue} -d ${cidr} -p tcp -m tcp --tcp-flags SYN,ACK,FIN,RST SYN ${queue}`,
    ),
    // The same exemptions as SYNPASS-IN-Q: only a SYN that should have been queued counts.
    ...(audited
      ? [
          `-A ${CHAINS.audit} -i lo -j RETURN`,
          ...excluded.map((cidr) => `-A ${CHAINS.audit} -s ${cidr} -j RETURN`),
          `-A ${CHAINS.audit} -m mark ! --mark ${judged} -m comment --comment ${UNJUDGED_COMMENT}`,
        ]
      : []),
    'COMMIT',
    '',
  ];
  return lines.join('\n');
}

/** The chains that judge what the kernel fast path deferred past the DNAT (buildDeferRuleset). */
export const DEFER_CHAINS = { egress: 'SYNPASS-DEFER', input: 'SYNPASS-DEFER-IN' } as const;

/** The mark the kernel fast path gives a SYN it defers past the DNAT: `pass` and `budgeted`, a pair nothing else sets on a packet on its way in. */
export function deferMark(marks: ConnectionMarks): number {
  return (marks.pass | marks.budgeted) >>> 0;
}

/**
 * With the kernel fast path, as iptables-restore --noflush input after the ruleset (one family's;
 * the same text serves both): the rules that judge a SYN after this host's DNAT, by the kernel
 * fast path's programs (iptables' bpf match, by their pins).
 * On any host, a SYN on its way to SYNPASS-OUT-Q (a local socket's; on a node, a pod's too) whose
 * sender holds a kernel client entry for the host and port the DNAT chose (its socket never saw
 * that address) gets `pass`, which no packet there carries, and returns to SYNPASS-OUT, whose mark
 * chain marks it judged, unreleased: the tc egress program writes its fast option, and its proven
 * SYN-ACK releases the connection, or its retransmit is queued.
 * On a Kubernetes node, also: a pod's SYN to a service address or node port through which it
 * reached a pod of the node or another host before leaves the tc program with deferMark, and
 * PREROUTING lets it by unqueued. Forwarded, mangle POSTROUTING asks whether the agent judged the
 * client pod and the chosen pod for its port (then it goes on as such a SYN addressed to that pod
 * would: released, marked judged); else whether the pod holds a client entry for the chosen host
 * and port (then as above). Otherwise it is queued there, and the agent judges it between the two
 * pods, or gives it the pod's token toward a target network. Delivered to this host (a DNAT to
 * the node's own address), mangle INPUT queues it, where the agent judges it as a pod's SYN to the
 * node; what comes back from that verdict is marked there as SYNPASS-MARK marks it in PREROUTING.
 */
export function buildDeferRuleset(options: RuleOptions, programs: DeferPrograms): string {
  const { marks } = options;
  const queue = queueTarget(options);
  const deferred = `${hex(deferMark(marks))}/${hex(deferMark(marks))}`;
  const unmarked = `${hex(marks.pass)}/${hex(marks.pass | marks.judged)}`;
  const release = `${hex(marks.release)}/${hex(marks.release)}`;
  const pass = `${hex(marks.pass)}/${hex(marks.pass)}`;
  const translated = [
    `-I ${CHAINS.egressQueue} 1 ! -o lo -p tcp -m tcp --tcp-flags SYN,ACK,FIN,RST SYN -m bpf --object-pinned ${programs.translated} -j MARK --or-mark ${hex(marks.pass)}`,
    `-I ${CHAINS.egressQueue} 2 -m mark --mark ${pass} -j RETURN`,
  ];
  if (!options.routedWorkloads) return ['*mangle', ...translated, 'COMMIT', ''].join('\n');
  return [
    '*mangle',
    ...translated,
    `:${DEFER_CHAINS.egress} - [0:0]`,
    `:${DEFER_CHAINS.input} - [0:0]`,
    `-I ${CHAINS.ingress} 1 -m mark --mark ${deferred} -j RETURN`,
    `-I ${CHAINS.egress} 1 -m mark --mark ${deferred} -j ${DEFER_CHAINS.egress}`,
    // Only packets carrying `pass` and not `judged` jump: after PREROUTING, none but a deferred
    // SYN and what comes back from its verdict here.
    `-I INPUT 1 -p tcp -m mark --mark ${unmarked} -j ${DEFER_CHAINS.input}`,
    // Not a SYN that never met a verdict: the audit rule (failing open) would count it so.
    ...(options.failOpen ? [`-I ${CHAINS.audit} 1 -m mark --mark ${deferred} -j RETURN`] : []),
    `-A ${DEFER_CHAINS.egress} -m bpf --object-pinned ${programs.backend} -j MARK --or-mark ${hex(marks.release)}`,
    `-A ${DEFER_CHAINS.egress} -m mark --mark ${release} -j ${CHAINS.mark}`,
    // Still deferred: not a pair (SYNPASS-MARK cleared the mark of those).
    `-A ${DEFER_CHAINS.egress} -m mark --mark ${deferred} -m bpf --object-pinned ${programs.translated} -j RETURN`,
    `-A ${DEFER_CHAINS.egress} -m mark --mark ${deferred} ${queue}`,
    `-A ${DEFER_CHAINS.input} -m mark --mark ${deferred} ${queue}`,
    `-A ${DEFER_CHAINS.input} -j ${CHAINS.mark}`,
    'COMMIT',
    '',
  ].join('\n');
}

/** The nftables table (family inet: IPv4 and IPv6) of the native notrack rules (buildNativeNotrack). */
export const NATIVE_TABLE = 'synpass';

/**
 * What buildNotrackRuleset does, as `nft -f` input: nftables' own `notrack`, in a table of the
 * agent's own that replaces an earlier one in the same transaction. The raw-table rules cost every
 * packet of a fast-path connection a jump and an xtables target: iptables-nft runs `-j CT
 * --notrack` through the compatibility layer (`nft --debug=netlink` shows `target name CT`,
 * though `nft list` prints `notrack`). Preferred where the `nft` command works.
 */
export function buildNativeNotrack(marks: ConnectionMarks): string {
  const untracked = `meta l4proto tcp meta mark & ${hex(marks.untracked)} == ${hex(marks.untracked)} notrack`;
  return [
    `table inet ${NATIVE_TABLE}`,
    `delete table inet ${NATIVE_TABLE}`,
    `table inet ${NATIVE_TABLE} {`,
    `  chain notrack-prerouting { type filter hook prerouting priority raw; policy accept; ${untracked}; }`,
    `  chain notrack-output { type filter hook output priority raw; policy accept; ${untracked}; }`,
    '}',
    '',
  ].join('\n');
}

/**
 * The raw-table rules, as iptables-restore --noflush input, that leave every packet carrying the
 * `untracked` bit out of conntrack: the kernel fast path sets it on the connections it judged
 * (every packet in, from its tc program; every packet out, in the socket mark). Installed only
 * while the fast path runs and conntrack is not kept for it, where buildNativeNotrack cannot be.
 */
export function buildNotrackRuleset(marks: ConnectionMarks): string {
  const untracked = `${hex(marks.untracked)}/${hex(marks.untracked)}`;
  return [
    '*raw',
    `:${NOTRACK_CHAIN} - [0:0]`,
    `-I PREROUTING 1 -p tcp -m mark --mark ${untracked} -j ${NOTRACK_CHAIN}`,
    `-I OUTPUT 1 -p tcp -m mark --mark ${untracked} -j ${NOTRACK_CHAIN}`,
    `-A ${NOTRACK_CHAIN} -j CT --notrack`,
    'COMMIT',
    '',
  ].join('\n');
}

interface SavedRule {
  chain: string;
  /** Everything after `-A <chain> `. */
  spec: string;
}

/** The `-A` lines of `iptables-save [-c]` output, in order, counters dropped. */
function savedRules(saved: string): SavedRule[] {
  const rules: SavedRule[] = [];
  for (const line of saved.split('\n')) {
    const rule = /^(?:\[\d+:\d+\] )?-A (\S+) (.*)$/.exec(line);
    if (rule !== null) rules.push({ chain: rule[1]!, spec: rule[2]! });
  }
  return rules;
}

function jumpsToSynpass(rule: SavedRule): boolean {
  return / -j SYNPASS-\S+/.test(` ${rule.spec}`);
}

/** From one family's `iptables-save [-c] -t mangle` output: whether every rule buildRuleset makes for it is there. */
export function rulesPresent(family: IpFamily, saved: string, options: RuleOptions): boolean {
  const deferring = options.deferPrograms === undefined ? '' : buildDeferRuleset(options, options.deferPrograms);
  const expected = `${buildRuleset(family, options)}${deferring}`
    .split('\n')
    .filter((line) => line.startsWith('-A ') || line.startsWith('-I ')).length;
  const present = savedRules(saved).filter((rule) => rule.chain.startsWith(CHAIN_PREFIX) || jumpsToSynpass(rule)).length;
  return present === expected;
}

/** What `nft -j` printed under `name` in one item of its list: an object, or nothing. */
function nftObject(item: unknown, name: string): Record<string, unknown> | null {
  if (typeof item !== 'object' || item === null) return null;
  const value = (item as Record<string, unknown>)[name];
  return typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : null;
}

/**
 * From `nft -j list ruleset` output: whether a chain of type nat holds a rule. A nat chain
 * without one translates nothing, and iptables-nft leaves its chains behind when the last rule
 * goes. Null for output that is not such JSON.
 */
export function nftNatRules(json: string): boolean | null {
  let items: unknown;
  try {
    items = (JSON.parse(json) as { nftables?: unknown } | null)?.nftables;
  } catch {
    return null;
  }
  if (!Array.isArray(items)) return null;
  const where = (object: Record<string, unknown>, chain: unknown) => `${String(object.family)} ${String(object.table)} ${String(chain)}`;
  const natChains = new Set<string>();
  for (const item of items) {
    const chain = nftObject(item, 'chain');
    if (chain?.type === 'nat') natChains.add(where(chain, chain.name));
  }
  return items.some((item) => {
    const rule = nftObject(item, 'rule');
    return rule !== null && natChains.has(where(rule, rule.chain));
  });
}

/**
 * From `iptables-save [-c] -t mangle` output: how many other rules come before the agent's jumps
 * in PREROUTING and POSTROUTING. A packet such a rule accepts or drops never reaches the agent,
 * so a SYN it accepts arrives unjudged. A chain without our jump counts nothing: rulesPresent
 * reports that case.
 */
export function rulesAheadOfHooks(saved: string): number {
  const rules = savedRules(saved);
  const jumps = { PREROUTING: CHAINS.ingress, POSTROUTING: CHAINS.egress };
  let ahead = 0;
  for (const [chain, target] of Object.entries(jumps)) {
    const position = rules.filter((rule) => rule.chain === chain).findIndex((rule) => ` ${rule.spec} `.includes(` -j ${target} `));
    if (position > 0) ahead += position;
  }
  return ahead;
}

/** From `iptables-save -c -t mangle` output, the packet counter of the rule of `chain` with `comment` (0 if absent). */
function ruleCounter(saved: string, chain: string, comment: string): number {
  for (const line of saved.split('\n')) {
    if (!line.includes(`-A ${chain} `) || !line.includes(`--comment ${comment}`)) continue;
    const counters = /^\[(\d+):\d+\]/.exec(line);
    return counters ? Number(counters[1]) : 0;
  }
  return 0;
}

/** SYNs that reached INPUT or FORWARD without a verdict (the audit rule's counter). */
export function unjudgedSynCount(saved: string): number {
  return ruleCounter(saved, CHAINS.audit, UNJUDGED_COMMENT);
}

/** Packets the kernel dropped above their source's rate (the source-limit rule's counter). */
export function sourceLimitedCount(saved: string): number {
  return ruleCounter(saved, CHAINS.ingressLimit, SOURCE_LIMITED_COMMENT);
}

/**
 * From `iptables-save -t mangle` output taken before the removal: the built-in chains (policy
 * ACCEPT) that hold nothing but synpass jumps, so they are empty once those go. On the nft
 * backend an empty built-in chain is still a hook every packet passes through; nothing is lost
 * by deleting it, and iptables creates it again when a rule needs it.
 */
export function emptiedBuiltinChains(saved: string): string[] {
  const accepting = saved.split('\n').flatMap((line) => /^:(\S+) ACCEPT /.exec(line)?.[1] ?? []);
  const rules = savedRules(saved);
  return accepting.filter((chain) => {
    const held = rules.filter((rule) => rule.chain === chain);
    return held.length > 0 && held.every(jumpsToSynpass);
  });
}

/**
 * From `iptables-save -t TABLE` output, the iptables-restore --noflush input that removes every
 * synpass jump and chain of that table; null when nothing of synpass is installed.
 */
export function buildRemoval(saved: string, table: 'mangle' | 'raw' = 'mangle'): string | null {
  const jumps: string[] = [];
  const chains: string[] = [];
  for (const line of saved.split('\n')) {
    const chainDeclaration = /^:(\S+) /.exec(line);
    if (chainDeclaration?.[1]?.startsWith(CHAIN_PREFIX)) chains.push(chainDeclaration[1]);
  }
  for (const rule of savedRules(saved)) {
    if (!rule.chain.startsWith(CHAIN_PREFIX) && jumpsToSynpass(rule)) jumps.push(`-D ${rule.chain} ${rule.spec}`);
  }
  if (jumps.length === 0 && chains.length === 0) return null;
  return [`*${table}`, ...jumps, ...chains.map((c) => `-F ${c}`), ...chains.map((c) => `-X ${c}`), 'COMMIT', ''].join(
    '\n',
  );
}
