// scripts/bench: connection rate, sequential connect latency and bulk throughput between two
// lab namespaces: without agents (the baseline), with pass-through agents, and with identity
// agents (known pair, and first contact with peer caches flushed before every connect, on the
// queue path and with the kernel fast path). Every number is printed against the baseline
// measured in this same run. The VM drifts by more than the effects measured, so connections
// are measured in rounds (baseline, pass-through, identity, the order reversed every other
// round) and each figure is the median of its per-round values
// against that round's baseline; bulk throughput (iperf3) alternates rounds the same way. A
// conntrack-only run per round shows how much of the cost is connection tracking, which the
// connmark release needs, and the CPU time per connection shows what the rate run cost in CPU,
// which is what bounds the rate on a busy host. Finally each agent mode is measured interleaved
// with a bypass (second addresses the agents exclude), alternating every few connects and every
// few hundred milliseconds, which cancels the drift that the rounds only average out. A C loop
// serving the agent's own rules and queue (nfq-reference.c, compiled here) runs as a mode of its
// own: the floor of a user-space trip on this machine, measured the same way. The identity agents
// run twice: on the queue alone, and with the kernel fast path (known pairs judged in eBPF, no
// queue trip); the lab runs every process in its host's cgroup so the latter can attach there.
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { prepareIdentities } from '../lib/identity-lab.ts';
import { Lab, sleep, untilRehearsed, type AgentHandle } from '../lib/lab.ts';
import { compileReferenceLoop, startReferenceLoops } from '../lib/reference-loop.ts';
import { agentsLogWarningsOnly, fmt, median, runLoad as load, signed, startLoadServer, times } from './lab-load.ts';
import { perfAvailable, sampleNetfilter, type NetfilterShare } from './netfilter-share.ts';

// Ports the example policy (policy/examples/three-tier) opens from web to api.
const CONNECT_PORT = 8080;
const BULK_PORT = 7000;
const config = {
  rateConcurrency: 32,
  rounds: Number(process.env.BENCH_ROUNDS ?? 3),
  rateMs: Number(process.env.BENCH_RATE_MS ?? 3000),
  rateMax: 60_000,
  sequentialCount: Number(process.env.BENCH_SEQUENTIAL ?? 2000),
  firstContactCount: Number(process.env.BENCH_FIRST_CONTACT ?? 300),
  pairedSlices: Number(process.env.BENCH_PAIRED_SLICES ?? 10),
  pairedSliceMs: 300,
  pairedCount: Number(process.env.BENCH_PAIRED ?? 1000),
  pairedFirstContactCount: Number(process.env.BENCH_PAIRED_FIRST_CONTACT ?? 150),
  bulkSeconds: Number(process.env.BENCH_BULK_SECONDS ?? 3),
  bulkRounds: Number(process.env.BENCH_BULK_ROUNDS ?? 6),
};
const profiling = perfAvailable();
/** The C reference loop's binary; without it (no compiler) the bench runs without that mode. */
const referenceLoop = ((): string => {
  try {
    return compileReferenceLoop();
  } catch (error) {
    process.stderr.write(`bench: could not compile scripts/benchmarks/nfq-reference.c, running without the C reference loop: ${String(error)}\n`);
    return '';
  }
})();

interface Results {
  rate?: number;
  /** CPU time of the whole machine per connection in the rate run, and of the agents alone. */
  machineCpu?: number;
  agentCpu?: number;
  p50: number;
  p99: number;
  tripsPerConnection?: number;
  /** Agent JavaScript per queued packet during the sequential run (status `judging`). */
  judgingMicroseconds?: number;
  /** The same by kind of packet ("egress syn", ...), both agents together. */
  judgingByStage?: Record<string, number>;
}

interface BulkResults {
  /** Median over rounds of (with the mode / without it), each pair measured back to back. */
  ratio: number;
  lowest: number;
  highest: number;
  baselineGbps: number;
  /** Medians over rounds of the share of busy CPU in netfilter during the transfer, when perf runs. */
  netfilterWithout: NetfilterShare | undefined;
  netfilterWith: NetfilterShare | undefined;
}

agentsLogWarningsOnly();

interface Work {
  queued: number;
  judged: number;
  microseconds: number;
  /** Packets and microseconds by kind of packet. */
  stages: Map<string, { judged: number; microseconds: number }>;
}

/** Queued packets, packets judged and microseconds spent judging them, over all agents. */
async function work(agents: AgentHandle[]): Promise<Work> {
  const statuses = await Promise.all(agents.map((agent) => agent.status()));
  const sum: Work = { queued: 0, judged: 0, microseconds: 0, stages: new Map() };
  for (const s of statuses) {
    sum.queued += s.queue.received ?? 0;
    sum.judged += s.judging.packets;
    sum.microseconds += s.judging.packets * s.judging.microsecondsPerPacket;
    for (const row of s.judging.byStage ?? []) {
      const kind = `${row.direction} ${row.stage}`;
      const stage = sum.stages.get(kind) ?? { judged: 0, microseconds: 0 };
      stage.judged += row.packets;
      stage.microseconds += row.packets * row.microsecondsPerPacket;
      sum.stages.set(kind, stage);
    }
  }
  return sum;
}

/** Microseconds per packet of each kind judged between two looks at the agents. */
function stagesBetween(before: Work, after: Work): Record<string, number> {
  const stages: Record<string, number> = {};
  for (const [kind, { judged, microseconds }] of after.stages) {
    const earlier = before.stages.get(kind) ?? { judged: 0, microseconds: 0 };
    if (judged > earlier.judged) stages[kind] = (microseconds - earlier.microseconds) / (judged - earlier.judged);
  }
  return stages;
}

async function sequential(lab: Lab, agents: AgentHandle[], count: number, flushSockets: string[] = []): Promise<Results> {
  const before = await work(agents);
  const result = await load(lab, ['sequential', lab.address('api'), String(CONNECT_PORT), String(count), ...flushSockets]);
  if (agents.length === 0) return { p50: result.p50!, p99: result.p99! };
  const after = await work(agents);
  return {
    p50: result.p50!,
    p99: result.p99!,
    tripsPerConnection: (after.queued - before.queued) / result.count!,
    judgingMicroseconds: (after.microseconds - before.microseconds) / Math.max(1, after.judged - before.judged),
    judgingByStage: stagesBetween(before, after),
  };
}

/** The agents' path against the bypass (addresses they exclude), measured interleaved. */
interface Paired {
  rateRatio?: number;
  addedP50: number;
  addedP99: number;
}

async function paired(lab: Lab, flushSockets: string[], withRate: boolean): Promise<Paired> {
  // The bypass: second addresses of api and web that the agents exclude (the same hosts, rules
  // and conntrack, no queueing).
  const paths = [lab.address('api'), lab.secondAddress('api'), lab.secondAddress('web'), String(CONNECT_PORT)];
  const count = flushSockets.length > 0 ? config.pairedFirstContactCount : config.pairedCount;
  const latency = await load(lab, ['paired-sequential', ...paths, String(count), ...flushSockets]);
  const result: Paired = { addedP50: latency.p50! - latency.bypassP50!, addedP99: latency.p99! - latency.bypassP99! };
  if (!withRate) return result;
  const rate = await load(lab, ['paired-rate', ...paths, String(config.rateConcurrency), String(config.pairedSliceMs), String(config.pairedSlices)]);
  if ((rate.failed ?? 0) > 0) process.stderr.write(`warning: ${rate.failed} connections failed\n`);
  return { ...result, rateRatio: rate.perSecond! / rate.bypassPerSecond! };
}

/** `queuePids`: the processes serving the queues, when they are not agents (the C loop). */
async function measure(lab: Lab, agents: AgentHandle[], queuePids: number[] = []): Promise<Results> {
  // Discarded: a freshly started agent's code is not compiled yet, and every mode gets the same.
  await load(lab, ['rate', lab.address('api'), String(CONNECT_PORT), String(config.rateConcurrency), '700', String(config.rateMax)]);
  const pids = [...agents.map((agent) => agent.process.pid), ...queuePids].map(String);
  const rate = await load(lab, ['rate', lab.address('api'), String(CONNECT_PORT), String(config.rateConcurrency), String(config.rateMs), String(config.rateMax), ...pids]);
  if ((rate.failed ?? 0) > 0) process.stderr.write(`warning: ${rate.failed} connections failed\n`);
  const latency = await sequential(lab, agents, config.sequentialCount);
  return {
    ...latency,
    rate: rate.perSecond!,
    machineCpu: rate.machineMicroseconds! / rate.completed!,
    ...(pids.length === 0 ? {} : { agentCpu: rate.processMicroseconds! / rate.completed! }),
  };
}

/**
 * One iperf3 stream from web to api, in Gbit/s as the receiver counted it. The client runs as
 * web's workload (its cgroup), or the kernel fast path would never see its connections.
 */
async function iperf(lab: Lab): Promise<number> {
  for (let attempt = 1; ; attempt++) {
    const output = lab.execWorkload('web', ['iperf3', '--client', lab.address('api'), '--port', String(BULK_PORT), '--time', String(config.bulkSeconds), '--json']);
    const report = JSON.parse(output) as { error?: string; end?: { sum_received?: { bits_per_second?: number } } };
    const bits = report.end?.sum_received?.bits_per_second;
    if (bits !== undefined) return bits / 1e9;
    // The server takes one test at a time and may still be closing the previous one.
    if (attempt === 5) throw new Error(`iperf3 gave no result: ${report.error ?? output.slice(0, 400)}`);
    await sleep(300);
  }
}

/** Turns a mode on (agents, or conntrack alone) and returns what turns it off again. */
type ModeSwitch = () => Promise<() => Promise<void>>;

/** Rounds alternate which side goes first, so a drift during a round does not favour one side. */
async function bulk(lab: Lab, switchOn: ModeSwitch): Promise<BulkResults> {
  const ratios: number[] = [];
  const baselines: number[] = [];
  const shares: { without: NetfilterShare[]; with: NetfilterShare[] } = { without: [], with: [] };
  // perf samples all CPUs for the first bulkSeconds - 1 seconds of each transfer, never past its end.
  const sampled = async (into: NetfilterShare[]): Promise<number> => {
    if (!profiling) return iperf(lab);
    const { result, share } = await sampleNetfilter(Math.max(1, config.bulkSeconds - 1), () => iperf(lab));
    if (share !== null) into.push(share);
    return result;
  };
  for (let round = 0; round < config.bulkRounds; round++) {
    let without = 0;
    if (round % 2 === 0) without = await sampled(shares.without);
    const switchOff = await switchOn();
    const withMode = await sampled(shares.with);
    await switchOff();
    if (round % 2 === 1) without = await sampled(shares.without);
    baselines.push(without);
    ratios.push(withMode / without);
  }
  const medianShare = (list: NetfilterShare[]): NetfilterShare | undefined =>
    list.length === 0 ? undefined : { rules: median(list.map((s) => s.rules)), conntrack: median(list.map((s) => s.conntrack)), programs: median(list.map((s) => s.programs)) };
  return {
    ratio: median(ratios),
    lowest: Math.min(...ratios),
    highest: Math.max(...ratios),
    baselineGbps: median(baselines),
    netfilterWithout: medianShare(shares.without),
    netfilterWith: medianShare(shares.with),
  };
}

/** Kinds of packet in a handshake's order: the connect waits on the first four. */
const HANDSHAKE_KINDS: [string, string][] = [
  ['egress syn', 'SYN out'],
  ['ingress syn', 'SYN in'],
  ['egress syn-ack', 'SYN-ACK out'],
  ['ingress syn-ack', 'SYN-ACK in'],
  ['egress ack', 'ACK out'],
  ['ingress ack', 'ACK in'],
];

/** Agent JavaScript per packet by kind in the sequential runs: median over rounds. */
function stagesReport(name: string, runs: Results[]): string {
  const kinds = HANDSHAKE_KINDS.map(([kind, label]) => {
    const values = runs.flatMap((run) => (run.judgingByStage?.[kind] === undefined ? [] : [run.judgingByStage[kind]]));
    return `${label} ${values.length === 0 ? '-' : fmt(median(values))}`;
  });
  return `${name}: ${kinds.slice(0, 4).join(', ')} (the connect waits on these); ${kinds.slice(4).join(', ')}`;
}

/** One mode over all rounds, each value taken against its own round's baseline. */
interface Summary {
  rate: number;
  rateRatio: number;
  rateRatioLow: number;
  rateRatioHigh: number;
  p50: number;
  addedP50: number;
  addedP50Low: number;
  addedP50High: number;
  p99: number;
  addedP99: number;
  trips?: number;
  judging?: number;
  machineCpu?: number;
  addedMachineCpu?: number;
  /** Baseline machine CPU per connection over this mode's: the rate ratio of a CPU-bound host. */
  cpuRatio?: number;
  agentCpu?: number;
}

/** Against a mode that did not run (BENCH_MODES), every ratio and difference is NaN, printed as '-'. */
function summarize(runs: Results[], baselines: Results[]): Summary {
  const baseline = (i: number): Results => baselines[i] ?? { p50: Number.NaN, p99: Number.NaN };
  const ratios = runs.map((run, i) => (run.rate ?? Number.NaN) / (baseline(i).rate ?? Number.NaN));
  const added50 = runs.map((run, i) => run.p50 - baseline(i).p50);
  const optional = (values: (number | undefined)[]): number | undefined => (values.some((v) => v === undefined) ? undefined : median(values as number[]));
  return {
    rate: median(runs.map((run) => run.rate ?? Number.NaN)),
    rateRatio: median(ratios),
    rateRatioLow: Math.min(...ratios),
    rateRatioHigh: Math.max(...ratios),
    p50: median(runs.map((run) => run.p50)),
    addedP50: median(added50),
    addedP50Low: Math.min(...added50),
    addedP50High: Math.max(...added50),
    p99: median(runs.map((run) => run.p99)),
    addedP99: median(runs.map((run, i) => run.p99 - baseline(i).p99)),
    ...(optional(runs.map((run) => run.tripsPerConnection)) === undefined ? {} : { trips: optional(runs.map((run) => run.tripsPerConnection))! }),
    ...(optional(runs.map((run) => run.judgingMicroseconds)) === undefined ? {} : { judging: optional(runs.map((run) => run.judgingMicroseconds))! }),
    ...(runs.every((run) => run.machineCpu !== undefined)
      ? {
          machineCpu: median(runs.map((run) => run.machineCpu!)),
          addedMachineCpu: median(runs.map((run, i) => run.machineCpu! - (baseline(i).machineCpu ?? Number.NaN))),
          cpuRatio: median(runs.map((run, i) => (baseline(i).machineCpu ?? Number.NaN) / run.machineCpu!)),
        }
      : {}),
    // Modes without a queue consumer have no process of their own to account.
    ...(optional(runs.map((run) => run.agentCpu)) === undefined ? {} : { agentCpu: optional(runs.map((run) => run.agentCpu))! }),
  };
}

function pairedReport(name: string, runs: Paired[]): string {
  const ratios = runs.flatMap((run) => (run.rateRatio === undefined ? [] : [run.rateRatio]));
  const added = runs.map((run) => run.addedP50);
  return [
    name.padEnd(28),
    (ratios.length === 0 ? '-' : times(median(ratios), 2)).padStart(6),
    (ratios.length === 0 ? '-' : `${fmt(Math.min(...ratios), 2)}-${fmt(Math.max(...ratios), 2)}`).padStart(10),
    signed(median(added)).padStart(6),
    `${fmt(Math.min(...added))}..${fmt(Math.max(...added))}`.padStart(12),
    signed(median(runs.map((run) => run.addedP99))).padStart(7),
  ].join(' ');
}

function cpuReport(name: string, run: Summary, againstConntrack?: Summary): string {
  return [
    name.padEnd(28),
    `${fmt(run.machineCpu)}us`.padStart(10),
    signed(run.addedMachineCpu).padStart(7),
    times(run.cpuRatio, 2).padStart(10),
    (againstConntrack === undefined ? '-' : times(againstConntrack.cpuRatio, 2)).padStart(6),
    (run.agentCpu === undefined ? '-' : `${fmt(run.agentCpu)}us`).padStart(10),
  ].join(' ');
}

/** `againstConntrack`: the same runs taken against the conntrack-only runs of their rounds. */
function report(name: string, run: Summary, bulkRun?: BulkResults, againstConntrack?: Summary): string {
  const rated = Number.isFinite(run.rate);
  return [
    name.padEnd(28),
    (rated ? `${fmt(run.rate)}/s` : '-').padStart(9),
    (rated ? times(run.rateRatio, 2) : '-').padStart(6),
    (rated ? `${fmt(run.rateRatioLow, 2)}-${fmt(run.rateRatioHigh, 2)}` : '-').padStart(10),
    (againstConntrack === undefined ? '-' : times(againstConntrack.rateRatio, 2)).padStart(6),
    `${fmt(run.p50)}us`.padStart(8),
    signed(run.addedP50).padStart(6),
    `${fmt(run.addedP50Low)}..${fmt(run.addedP50High)}`.padStart(12),
    `${fmt(run.p99)}us`.padStart(8),
    signed(run.addedP99).padStart(7),
    (bulkRun === undefined ? '-' : times(bulkRun.ratio, 3)).padStart(7),
    fmt(run.trips, 1).padStart(6),
    fmt(run.judging, 1).padStart(7),
  ].join(' ');
}

/**
 * Connection tracking on in both hosts and nothing else: the agents' connmark release needs it,
 * so this is the share of their cost that is conntrack's, not theirs. Nodes that run kube-proxy
 * or Docker pay it already. Loading a conntrack match turns tracking on for the namespace; the
 * rule matches UDP only, so a TCP packet meets one native protocol test and no match.
 */
function trackConnections(lab: Lab, on: boolean): void {
  for (const host of ['api', 'web'] as const) {
    lab.exec(host, ['iptables', '-t', 'mangle', on ? '-A' : '-D', 'PREROUTING', '-p', 'udp', '-m', 'conntrack', '--ctstate', 'NEW', '-m', 'comment', '--comment', 'synpass-bench-conntrack']);
    // The emptied base chain would stay a hook that every later baseline packet passes (the
    // agents remove theirs the same way when they stop). iptables-legacy cannot delete it.
    if (!on) {
      try {
        lab.exec(host, ['iptables', '-t', 'mangle', '-X', 'PREROUTING']);
      } catch {
        // legacy backend: its table's hooks stay whatever we do
      }
    }
  }
}

/**
 * The bulk floor of any design that keeps NFQUEUE for first contact: one rule in each of mangle
 * PREROUTING and POSTROUTING that every TCP packet meets and none matches (a native mark test,
 * a bit no one sets), and no conntrack.
 */
function hookRules(lab: Lab, on: boolean): void {
  for (const host of ['api', 'web'] as const) {
    for (const chain of ['PREROUTING', 'POSTROUTING']) {
      lab.exec(host, ['iptables', '-t', 'mangle', on ? '-A' : '-D', chain, '-p', 'tcp', '-m', 'mark', '--mark', '0x80000000/0x80000000', '-j', 'RETURN']);
      // As in trackConnections: the emptied base chain would stay a hook.
      if (!on) {
        try {
          lab.exec(host, ['iptables', '-t', 'mangle', '-X', chain]);
        } catch {
          // legacy backend
        }
      }
    }
  }
}

const directory = mkdtempSync(join(tmpdir(), 'synpass-bench-'));
const lab = Lab.up('bn', 90, { kernel: true });
try {
  const files = await prepareIdentities(lab, directory);
  await startLoadServer(lab, CONNECT_PORT);
  await lab.spawn('api', ['iperf3', '--server', '--port', String(BULK_PORT), '--forceflush']).waitFor((l) => String(l.text).includes('listening'));
  for (const host of ['web', 'api'] as const) lab.exec(host, ['ip', 'addr', 'add', `${lab.secondAddress(host)}/24`, 'dev', 'eth0']);
  const bypass = (['web', 'api'] as const).flatMap((host) => ['--exclude', `${lab.secondAddress(host)}/32`]);
  const passThroughAgents = async (): Promise<AgentHandle[]> => [await lab.startAgent('api', bypass), await lab.startAgent('web', bypass)];
  /** `conntrack`: datapath.fastPathConntrack of the kernel fast path (the lab has no NAT: `auto` skips). */
  const identityAgents = async (kernel = false, conntrack: 'auto' | 'keep' = 'auto'): Promise<AgentHandle[]> => {
    const path = ['--kernel-fast-path', kernel ? 'on' : 'off', '--fast-path-conntrack', conntrack];
    const agents = [
      await lab.startAgent('api', ['--config', files.configs.api, ...bypass, ...path]),
      await lab.startAgent('web', ['--config', files.configs.web, ...bypass, ...path]),
    ];
    // The servers were listening before the agents started: the listener sweep puts them on the
    // kernel fast path (docs/operations.md, Which services).
    for (const agent of kernel ? agents : []) {
      const sweep = ((await agent.status()) as unknown as { kernelFastPath: { listenerSweep: { notRun: string | null } | null } }).kernelFastPath.listenerSweep;
      if (sweep?.notRun !== null) throw new Error(`the listener sweep did not run (${sweep?.notRun ?? 'no sweep'}): the bench servers would stay on the queue`);
    }
    await untilRehearsed(agents);
    return agents;
  };

  // Warm the server, the kernel's socket caches and the CPU up before the baseline, or the first
  // phase pays for it and every ratio after it looks better than it is.
  process.stderr.write('bench: warm-up (discarded)\n');
  await load(lab, ['rate', lab.address('api'), String(CONNECT_PORT), '32', '1500', String(config.rateMax)]);
  await iperf(lab);
  // BENCH_MODES=conntrack,kernel,... runs only those (and the baseline).
  const chosen = process.env.BENCH_MODES?.split(',');
  const ran = (mode: string): boolean => mode === 'baseline' || chosen === undefined || chosen.includes(mode);
  const modes = (['baseline', 'conntrack', 'reference', 'pass-through', 'identity', 'kernel', 'kernel-kept'] as const).filter((mode) => (mode !== 'reference' || referenceLoop !== '') && ran(mode));
  const results = {
    baseline: [] as Results[],
    conntrack: [] as Results[],
    reference: [] as Results[],
    'pass-through': [] as Results[],
    identity: [] as Results[],
    kernel: [] as Results[],
    'kernel-kept': [] as Results[],
    firstContact: [] as Results[],
    kernelFirstContact: [] as Results[],
  };
  const pairs = { reference: [] as Paired[], 'pass-through': [] as Paired[], identity: [] as Paired[], kernel: [] as Paired[], 'kernel-kept': [] as Paired[], firstContact: [] as Paired[], kernelFirstContact: [] as Paired[] };
  for (let round = 0; round < config.rounds; round++) {
    for (const mode of round % 2 === 0 ? modes : [...modes].reverse()) {
      process.stderr.write(`bench: round ${round + 1} of ${config.rounds}, ${mode}\n`);
      if (mode === 'baseline') {
        results.baseline.push(await measure(lab, []));
        continue;
      }
      if (mode === 'conntrack') {
        trackConnections(lab, true);
        results.conntrack.push(await measure(lab, []));
        trackConnections(lab, false);
        continue;
      }
      if (mode === 'reference') {
        const loops = await startReferenceLoops(lab, referenceLoop, bypass);
        results.reference.push(await measure(lab, [], loops.loops.map((loop) => loop.pid)));
        pairs.reference.push(await paired(lab, [], true));
        await loops.stop();
        continue;
      }
      const agents = mode === 'pass-through' ? await passThroughAgents() : await identityAgents(mode !== 'identity', mode === 'kernel-kept' ? 'keep' : 'auto');
      results[mode].push(await measure(lab, agents));
      // First contact: both agents forget their peers (and their kernels' entries) before every connect.
      const firstContact = mode === 'identity' ? 'firstContact' : mode === 'kernel' ? 'kernelFirstContact' : null;
      const flushSockets = agents.map((agent) => agent.socket);
      if (firstContact !== null) results[firstContact].push(await sequential(lab, agents, config.firstContactCount, flushSockets));
      pairs[mode].push(await paired(lab, [], true));
      if (firstContact !== null) pairs[firstContact].push(await paired(lab, flushSockets, false));
      for (const agent of agents) await agent.process.stop();
    }
  }

  process.stderr.write(`bench: bulk, ${config.bulkRounds} rounds per mode, each without and with it\n`);
  /** `kernel`: the transfer must have been the kernel fast path's, or its ratio measures the queue path. */
  const agentsOn =
    (start: () => Promise<AgentHandle[]>, kernel = false): ModeSwitch =>
    async () => {
      const agents = await start();
      const fastSyns = async (): Promise<number> => (await agents[0]!.status()).verdicts.find((v) => v.reason === 'ok-kernel' && v.direction === 'ingress')?.count ?? 0;
      const before = kernel ? await fastSyns() : 0;
      return async () => {
        if (kernel && (await fastSyns()) === before) throw new Error('bulk: the transfer did not take the kernel fast path (api accepted no fast SYN)');
        for (const agent of agents) await agent.process.stop();
      };
    };
  const conntrackOn: ModeSwitch = () => {
    trackConnections(lab, true);
    return Promise.resolve(() => {
      trackConnections(lab, false);
      return Promise.resolve();
    });
  };
  const bulkOf = async (name: string, mode: ModeSwitch): Promise<BulkResults | undefined> => (config.bulkRounds > 0 && ran(name) ? bulk(lab, mode) : undefined);
  const hooksOn: ModeSwitch = () => {
    hookRules(lab, true);
    return Promise.resolve(() => {
      hookRules(lab, false);
      return Promise.resolve();
    });
  };
  const conntrackBulk = await bulkOf('conntrack', conntrackOn);
  const hooksBulk = await bulkOf('hooks', hooksOn);
  const passThroughBulk = await bulkOf('pass-through', agentsOn(passThroughAgents));
  const identityBulk = await bulkOf('identity', agentsOn(() => identityAgents()));
  const kernelBulk = await bulkOf('kernel', agentsOn(() => identityAgents(true), true));
  const kernelKeptBulk = await bulkOf('kernel-kept', agentsOn(() => identityAgents(true, 'keep'), true));

  const header = [
    'mode'.padEnd(28),
    'conn/s'.padStart(9),
    'ratio'.padStart(6),
    'range'.padStart(10),
    'vs ct'.padStart(6),
    'seq p50'.padStart(8),
    'added'.padStart(6),
    'range'.padStart(12),
    'seq p99'.padStart(8),
    'added'.padStart(7),
    'bulk'.padStart(7),
    'trips'.padStart(6),
    'js/pkt'.padStart(7),
  ].join(' ');
  // A transfer that keeps the CPUs busy loses the throughput its extra netfilter and program work takes.
  const total = (s: NetfilterShare): number => s.rules + s.conntrack + s.programs;
  const cpuBound = (b: BulkResults | undefined): string => {
    if (b?.netfilterWith === undefined || b.netfilterWithout === undefined) return '-';
    return times(1 - (total(b.netfilterWith) - total(b.netfilterWithout)) / 100, 3);
  };
  const share = (s: NetfilterShare | undefined): string => (s === undefined ? '-' : `rules ${fmt(s.rules, 2)}%, conntrack ${fmt(s.conntrack, 2)}%, programs ${fmt(s.programs, 2)}%`);
  const range = (b: BulkResults | undefined): string => (b === undefined ? '-' : `${fmt(b.lowest, 3)}-${fmt(b.highest, 3)}x`);
  const summaries = {
    baseline: summarize(results.baseline, results.baseline),
    passThrough: summarize(results['pass-through'], results.baseline),
    identity: summarize(results.identity, results.baseline),
    kernel: summarize(results.kernel, results.baseline),
    kernelKept: summarize(results['kernel-kept'], results.baseline),
    conntrack: summarize(results.conntrack, results.baseline),
    reference: summarize(results.reference, results.baseline),
  };
  const againstConntrack = {
    reference: summarize(results.reference, results.conntrack),
    passThrough: summarize(results['pass-through'], results.conntrack),
    identity: summarize(results.identity, results.conntrack),
    kernel: summarize(results.kernel, results.conntrack),
    kernelKept: summarize(results['kernel-kept'], results.conntrack),
  };
  /** The lines of the modes that ran. */
  const rows = (entries: [string, string][]): string[] => entries.flatMap(([mode, line]) => (ran(mode) ? [line] : []));
  const lines = [
    `${config.rounds} rounds; rate: ${config.rateConcurrency} concurrent for ${config.rateMs} ms; sequential: ${config.sequentialCount} connects (first contact ${config.firstContactCount})`,
    header,
    ...rows([
      ['baseline', report('no agents (baseline)', summaries.baseline)],
      ['conntrack', report('conntrack only, no agents', summaries.conntrack, conntrackBulk)],
      ...(referenceLoop === '' ? [] : ([['reference', report('C reference loop, no token', summaries.reference, undefined, againstConntrack.reference)]] as [string, string][])),
      ['pass-through', report('pass-through', summaries.passThrough, passThroughBulk, againstConntrack.passThrough)],
      ['identity', report('identity, known pair', summaries.identity, identityBulk, againstConntrack.identity)],
      ['kernel', report('kernel fast path, known pair', summaries.kernel, kernelBulk, againstConntrack.kernel)],
      ['kernel-kept', report('kernel, conntrack kept', summaries.kernelKept, kernelKeptBulk, againstConntrack.kernelKept)],
      // BENCH_FIRST_CONTACT=0 measures no first contact: no row rather than a row of nothing.
      ...(config.firstContactCount === 0
        ? []
        : ([
            ['identity', report('identity, first contact', summarize(results.firstContact, results.baseline))],
            ['kernel', report('kernel, first contact', summarize(results.kernelFirstContact, results.baseline))],
          ] as [string, string][])),
    ]),
    'each figure: median over rounds, against the same round\'s baseline; range: lowest-highest over rounds',
    'vs ct: rate against the conntrack-only run of the same round (connection tracking on, no agents: the connmark release needs it)',
    'trips: queued packets per connection, both agents together; added: microseconds over the baseline',
    'js/pkt: agent JavaScript per queued packet in the sequential run, microseconds (the rest of a trip is the kernel and waking the agent)',
    ...(config.firstContactCount === 0
      ? []
      : rows([
          ['identity', stagesReport('js/pkt by kind, identity, first contact', results.firstContact)],
          ['kernel', stagesReport('js/pkt by kind, kernel, first contact', results.kernelFirstContact)],
        ])),
    referenceLoop === ''
      ? 'C reference loop: not run (scripts/bench could not compile scripts/benchmarks/nfq-reference.c)'
      : 'C reference loop: the agent\'s rules and queue served by a minimal C loop (one packet per recv, the agent\'s marks, no token, no rewrite): the floor of a trip here',
    `bulk: iperf3 ${config.bulkSeconds} s, ${config.bulkRounds} rounds alternating without/with each mode, median ratio; ` +
      `baseline ${fmt([hooksBulk, conntrackBulk, passThroughBulk, identityBulk, kernelBulk, kernelKeptBulk].find((b) => b !== undefined)?.baselineGbps, 1)} Gbit/s; hooks alone (one unmatched rule in mangle PREROUTING and POSTROUTING, no conntrack: the floor of any NFQUEUE design) ${fmt(hooksBulk?.ratio, 3)}x; per-round ratios hooks alone ${range(hooksBulk)}, conntrack only ${range(conntrackBulk)}, pass-through ${range(passThroughBulk)}, identity ${range(identityBulk)}, kernel fast path ${range(kernelBulk)}, kernel with conntrack kept ${range(kernelKeptBulk)}`,
    profiling
      ? `bulk CPU in netfilter and BPF programs (perf, share of busy CPU, median of rounds; rules = hooks and rule evaluation; programs = the programs' own code, not the tc hook that runs them): ` +
        `no agents ${share(passThroughBulk?.netfilterWithout ?? hooksBulk?.netfilterWithout)}; hooks alone ${share(hooksBulk?.netfilterWith)}; conntrack only ${share(conntrackBulk?.netfilterWith)}; pass-through ${share(passThroughBulk?.netfilterWith)}; identity ${share(identityBulk?.netfilterWith)}; kernel fast path ${share(kernelBulk?.netfilterWith)}; kernel with conntrack kept ${share(kernelKeptBulk?.netfilterWith)}\n` +
        `bulk ratio of a CPU-bound transfer, from those shares (1 - the share they add): hooks alone ${cpuBound(hooksBulk)}, conntrack only ${cpuBound(conntrackBulk)}, pass-through ${cpuBound(passThroughBulk)}, identity ${cpuBound(identityBulk)}, kernel fast path ${cpuBound(kernelBulk)}, kernel with conntrack kept ${cpuBound(kernelKeptBulk)}`
      : 'bulk CPU in netfilter: not measured (perf is not available)',
    '',
    `CPU per connection in the rate run (machine: all ${cpus().length} cores busy, idle and steal excluded; agents: their processes alone, or the C loops')`,
    ['mode'.padEnd(28), 'machine'.padStart(10), 'added'.padStart(7), 'cpu ratio'.padStart(10), 'vs ct'.padStart(6), 'agents'.padStart(10)].join(' '),
    ...rows([
      ['baseline', cpuReport('no agents (baseline)', summaries.baseline)],
      ['conntrack', cpuReport('conntrack only, no agents', summaries.conntrack)],
      ...(referenceLoop === '' ? [] : ([['reference', cpuReport('C reference loop, no token', summaries.reference, againstConntrack.reference)]] as [string, string][])),
      ['pass-through', cpuReport('pass-through', summaries.passThrough, againstConntrack.passThrough)],
      ['identity', cpuReport('identity, known pair', summaries.identity, againstConntrack.identity)],
      ['kernel', cpuReport('kernel fast path, known pair', summaries.kernel, againstConntrack.kernel)],
      ['kernel-kept', cpuReport('kernel, conntrack kept', summaries.kernelKept, againstConntrack.kernelKept)],
    ]),
    'cpu ratio: baseline machine CPU per connection over the mode\'s, the rate ratio a host bound by CPU reaches; added: extra CPU per',
    'connection, which agents and conntrack cost wherever the rate is bound (it shifts with the VM\'s speed like the rate does)',
    '',
    `Interleaved with a bypass on the same hosts (addresses the agents exclude: their rules and conntrack, no queue), alternating every`,
    `10 connects (${config.pairedCount} each way; first contact ${config.pairedFirstContactCount}) and every ${config.pairedSliceMs} ms of the rate (${config.pairedSlices} slices): the VM's drift cancels`,
    ['mode'.padEnd(28), 'ratio'.padStart(6), 'range'.padStart(10), 'added'.padStart(6), 'range'.padStart(12), 'p99'.padStart(7)].join(' '),
    ...rows([
      ...(referenceLoop === '' ? [] : ([['reference', pairedReport('C reference loop, no token', pairs.reference)]] as [string, string][])),
      ['pass-through', pairedReport('pass-through', pairs['pass-through'])],
      ['identity', pairedReport('identity, known pair', pairs.identity)],
      ['kernel', pairedReport('kernel fast path, known pair', pairs.kernel)],
      ['kernel-kept', pairedReport('kernel, conntrack kept', pairs['kernel-kept'])],
      ['identity', pairedReport('identity, first contact', pairs.firstContact)],
      ['kernel', pairedReport('kernel, first contact', pairs.kernelFirstContact)],
    ]),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
} finally {
  await lab.down();
  rmSync(directory, { recursive: true, force: true });
  if (referenceLoop !== '') rmSync(dirname(referenceLoop), { recursive: true, force: true });
}
