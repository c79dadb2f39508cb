// scripts/bench-pods: new connections between two pods of one Kubernetes-style node (scripts/lib/
// node-lab.ts: pod A's namespace routed to pod B's through the node's), with no agent (the
// baseline), with the node's agent on the queue alone, and with its kernel fast path. Each mode
// runs twice: to pod B's own address, and to a service address the node DNATs to it. Every
// round measures the three modes (the order reversed every other round, each agent started
// afresh), and each figure is the median over rounds of its value against that round's baseline.
// Beside rate and latency it prints what the node's agent did per connection: packets queued to
// it, and SYNs its kernel accepted for a pair of pods.
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { countersMoved, kernelFastPathOf } from '../lib/kernel-counters.ts';
import { isRoot, ROOT, settledStatus, synpassCommand, untilAgentAnswers, untilRehearsed, type AgentHandle, type AgentStatus } from '../lib/lab.ts';
import { issueNodeAgent, nodeAgentConfig, NodeLab, POD_ADDRESS, POD_ADDRESS6, type Pod } from '../lib/node-lab.ts';
import { scratchDirectory } from '../lib/scratch.ts';
import { agentsLogWarningsOnly, fmt, median, runLoadIn, signed, startLoadServerIn, times } from './lab-load.ts';

const API = join(ROOT, 'scripts/lib/fake-kube-api.ts');
const SERVER_PORT = 8080;
/**
 * A service address, as kube-proxy makes one: port 80 of it is pod B's 8081. Another port than
 * the direct path's: with one, pod A's ports, reused within seconds by tens of thousands of
 * connects, would give a connection to the service the reply of an earlier direct one still
 * tracked, and the node's NAT would move it to another source port, or drop its SYN.
 */
const SERVICE = '10.96.0.10';
const SERVICE_PORT = 80;
const SERVICE_TARGET_PORT = 8081;
const config = {
  rounds: Number(process.env.BENCH_ROUNDS ?? 3),
  rateMs: Number(process.env.BENCH_RATE_MS ?? 3000),
  rateConcurrency: 32,
  rateMax: 60_000,
  sequentialCount: Number(process.env.BENCH_SEQUENTIAL ?? 2000),
};

const MODES = ['none', 'queue', 'kernel'] as const;
type Mode = (typeof MODES)[number];
const PATHS = { direct: { host: POD_ADDRESS.b, port: SERVER_PORT, label: "pod B's address" }, service: { host: SERVICE, port: SERVICE_PORT, label: 'service address' } } as const;
type PathName = keyof typeof PATHS;

interface Run {
  rate: number;
  /** CPU time of the whole machine per connection in the rate run. */
  machineCpu: number;
  p50: number;
  p99: number;
  /** Packets queued to the node's agent, and SYNs its kernel accepted for a pair of pods, per sequential connect. */
  queued?: number;
  kernelAccepted?: number;
}

agentsLogWarningsOnly();

function podJson(app: Pod) {
  return {
    metadata: { name: `${app}-1`, namespace: 'shop', resourceVersion: '1', labels: { app } },
    spec: { nodeName: 'node-1', serviceAccountName: app },
    status: { phase: 'Running', podIP: POD_ADDRESS[app], podIPs: [{ ip: POD_ADDRESS[app] }, { ip: POD_ADDRESS6[app] }] },
  };
}

/** The node agent's identity, policy (pod B admits pod A on both its ports) and configuration; returns the configuration's path. */
async function prepareNode(directory: string, apiPort: number): Promise<string> {
  await issueNodeAgent(directory);
  mkdirSync(join(directory, 'policy'));
  writeFileSync(
    join(directory, 'policy', 'shop.yaml'),
    stringify({ policies: [{ name: 'b', selector: { 'k8s.label.app': 'b' }, ingress: [{ name: 'from-a', action: 'allow', from: { 'k8s.label.app': 'a' }, ports: [SERVER_PORT, SERVICE_TARGET_PORT] }] }] }),
  );
  const file = join(directory, 'agent.yaml');
  writeFileSync(
    file,
    stringify({
      ...nodeAgentConfig(directory, apiPort),
      // A network behind the node the lab does not build: the pods' own are not targets.
      targets: ['10.216.1.0/24', 'fd16::/64'],
      policy: { directory: join(directory, 'policy'), watch: false },
    }),
  );
  return file;
}

async function startNodeAgent(lab: NodeLab, directory: string, configFile: string, mode: Exclude<Mode, 'none'>): Promise<AgentHandle> {
  const socket = join(directory, 'status.sock');
  const kernel = mode === 'kernel' ? [...lab.kernelFlags(lab.node), '--fast-path-state-file', join(directory, 'kernel-tables.json')] : ['--kernel-fast-path', 'off'];
  const child = lab.spawn(lab.node, [...synpassCommand(), 'agent', 'run', '--config', configFile, '--status-socket', socket, ...kernel], lab.cgroup(lab.node));
  const agent = await untilAgentAnswers(child, socket, 'the node');
  await untilRehearsed([agent]);
  const status = await agent.status();
  const running = kernelFastPathOf(status).running;
  if (running !== (mode === 'kernel')) throw new Error(`the node's agent runs ${running ? 'with' : 'without'} the kernel fast path in mode ${mode}: ${kernelFastPathOf(status).reason}`);
  return agent;
}

async function measure(lab: NodeLab, agent: AgentHandle | null, path: PathName): Promise<Run> {
  const launch = (command: string[]) => lab.spawn(lab.pods.a, command, lab.cgroup(lab.pods.a));
  const { host, port } = PATHS[path];
  // Discarded: warms the agent's code and, on the kernel path, makes the pair's first contact.
  await runLoadIn(launch, ['rate', host, String(port), String(config.rateConcurrency), '700', String(config.rateMax)]);
  const rate = await runLoadIn(launch, ['rate', host, String(port), String(config.rateConcurrency), String(config.rateMs), String(config.rateMax)]);
  if ((rate.failed ?? 0) > 0) process.stderr.write(`warning: ${rate.failed} connections failed (${path})\n`);
  const before: AgentStatus | null = agent === null ? null : await settledStatus(() => agent.status());
  const latency = await runLoadIn(launch, ['sequential', host, String(port), String(config.sequentialCount)]);
  const run: Run = { rate: rate.perSecond!, machineCpu: rate.machineMicroseconds! / rate.completed!, p50: latency.p50!, p99: latency.p99! };
  if (agent === null || before === null) return run;
  const after = await settledStatus(() => agent.status());
  const count = latency.count!;
  // Without the kernel fast path the status has no counters: its kernel accepted nothing.
  const accepted = kernelFastPathOf(after).running ? (countersMoved(kernelFastPathOf(before), kernelFastPathOf(after)).podSynAccepted ?? 0) : 0;
  return { ...run, queued: ((after.queue.received ?? 0) - (before.queue.received ?? 0)) / count, kernelAccepted: accepted / count };
}

function report(runs: Record<Mode, Record<PathName, Run[]>>): string[] {
  const lines = [
    `${'path'.padEnd(16)} ${'mode'.padEnd(7)} ${'conn/s'.padStart(7)} ${'ratio'.padStart(6)} ${'range'.padStart(10)} ${'p50 us'.padStart(7)} ${'added'.padStart(6)} ${'range'.padStart(12)} ${'p99 us'.padStart(7)} ${'cpu us'.padStart(6)} ${'added'.padStart(6)} ${'queued/conn'.padStart(11)} ${'kernel/conn'.padStart(11)}`,
  ];
  for (const path of Object.keys(PATHS) as PathName[]) {
    const baseline = runs.none[path];
    for (const mode of MODES) {
      const list = runs[mode][path];
      const ratios = list.map((run, i) => run.rate / baseline[i]!.rate);
      const added = list.map((run, i) => run.p50 - baseline[i]!.p50);
      const optional = (pick: (run: Run) => number | undefined) => (list.every((run) => pick(run) !== undefined) ? fmt(median(list.map((run) => pick(run)!)), 2) : '-');
      lines.push(
        [
          (mode === 'none' ? PATHS[path].label : '').padEnd(16),
          mode.padEnd(7),
          fmt(median(list.map((run) => run.rate))).padStart(7),
          (mode === 'none' ? '' : times(median(ratios), 2)).padStart(6),
          (mode === 'none' ? '' : `${fmt(Math.min(...ratios), 2)}-${fmt(Math.max(...ratios), 2)}`).padStart(10),
          fmt(median(list.map((run) => run.p50))).padStart(7),
          (mode === 'none' ? '' : signed(median(added))).padStart(6),
          (mode === 'none' ? '' : `${fmt(Math.min(...added))}..${fmt(Math.max(...added))}`).padStart(12),
          fmt(median(list.map((run) => run.p99))).padStart(7),
          fmt(median(list.map((run) => run.machineCpu))).padStart(6),
          (mode === 'none' ? '' : signed(median(list.map((run, i) => run.machineCpu - baseline[i]!.machineCpu)))).padStart(6),
          optional((run) => run.queued).padStart(11),
          optional((run) => run.kernelAccepted).padStart(11),
        ].join(' '),
      );
    }
  }
  return lines;
}

async function main(): Promise<void> {
  if (!isRoot()) throw new Error('scripts/bench-pods needs root (network namespaces)');
  const lab = new NodeLab(`bp${process.pid % 100000}`, true);
  const directory = scratchDirectory('bench-pods');
  try {
    lab.create();
    execFileSync('ip', ['netns', 'exec', lab.node, 'iptables', '-t', 'nat', '-A', 'PREROUTING', '-d', SERVICE, '-p', 'tcp', '--dport', String(SERVICE_PORT), '-j', 'DNAT', '--to-destination', `${POD_ADDRESS.b}:${SERVICE_TARGET_PORT}`]);
    writeFileSync(join(directory, 'pods.json'), JSON.stringify([podJson('a'), podJson('b')]));
    writeFileSync(join(directory, 'nodes.json'), JSON.stringify([{ metadata: { name: 'node-1' }, spec: { taints: [] } }]));
    const api = lab.spawn(lab.node, [process.execPath, '--import', 'tsx', API, join(directory, 'pods.json'), '0', join(directory, 'nodes.json')], undefined, true);
    const apiPort = (await api.waitFor((l) => typeof l.listening === 'number')).listening as number;
    const configFile = await prepareNode(directory, apiPort);
    for (const port of [SERVER_PORT, SERVICE_TARGET_PORT]) await startLoadServerIn((command) => lab.spawn(lab.pods.b, command, lab.cgroup(lab.pods.b)), port);
    process.stdout.write(`bench-pods: pod A -> pod B on one node, ${config.rounds} rounds: rate ${config.rateMs} ms at ${config.rateConcurrency} at once, ${config.sequentialCount} sequential connects\n`);
    const runs = Object.fromEntries(MODES.map((mode) => [mode, { direct: [] as Run[], service: [] as Run[] }])) as Record<Mode, Record<PathName, Run[]>>;
    for (let round = 0; round < config.rounds; round++) {
      for (const mode of round % 2 === 0 ? MODES : [...MODES].reverse()) {
        const agent = mode === 'none' ? null : await startNodeAgent(lab, directory, configFile, mode);
        for (const path of Object.keys(PATHS) as PathName[]) runs[mode][path].push(await measure(lab, agent, path));
        // A clean stop: the agent removes its rules and programs before the next mode.
        if (agent !== null && (await agent.process.stop('SIGTERM', 15_000)) !== 0) throw new Error(`the node's agent did not stop cleanly: ${agent.process.stderr.join('')}`);
      }
      process.stdout.write(`round ${round + 1} of ${config.rounds} done\n`);
    }
    process.stdout.write(`${report(runs).join('\n')}\n`);
  } finally {
    await lab.destroy();
  }
}

await main();
