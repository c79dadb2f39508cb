// scripts/bench-pods: new connections from a pod of one Kubernetes-style node (scripts/lib/
// node-lab.ts: pod A's namespace routed through the node's), with no agent (the baseline), with
// the agents on the queue alone, and with their kernel fast path. Each mode runs three paths: to
// pod B's own address, to a service address the node DNATs to it, and to a service address the
// node DNATs to a remote host behind it (with an agent of its own; the node masquerades pod A
// there, as a pod's egress usually is). Every round measures the three modes (the order reversed
// every other round, each agent started afresh), and each figure is the median over rounds of its
// value against that round's baseline. Beside rate and latency it prints what the agents did per
// connection: packets queued to either, and SYNs the node's kernel let by for a pair of pods
// (`podSynAccepted`) or sent fast for pod A after the DNAT (`synSent`).
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { countersMoved, kernelFastPathOf } from '../lib/kernel-counters.ts';
import { isRoot, ROOT, settledStatus, synpassCommand, untilAgentAnswers, untilRehearsed, type AgentHandle, type AgentStatus } from '../lib/lab.ts';
import { issueNodeAgent, issueRemoteAgent, nodeAgentConfig, NodeLab, POD_ADDRESS, POD_ADDRESS6, type Pod } from '../lib/node-lab.ts';
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
/** A service address whose backend is the remote host's port 8082, behind the node's uplink. */
const SERVICE_REMOTE = '10.96.0.11';
const REMOTE_PORT = 8082;
const REMOTE_ADDRESS = '10.216.1.2';
const NODE_UPLINK = '10.216.1.1';
const config = {
  rounds: Number(process.env.BENCH_ROUNDS ?? 3),
  rateMs: Number(process.env.BENCH_RATE_MS ?? 3000),
  rateConcurrency: 32,
  rateMax: 60_000,
  sequentialCount: Number(process.env.BENCH_SEQUENTIAL ?? 2000),
};

const MODES = ['none', 'queue', 'kernel'] as const;
type Mode = (typeof MODES)[number];
const PATHS = {
  direct: { host: POD_ADDRESS.b, port: SERVER_PORT, label: "pod B's address" },
  service: { host: SERVICE, port: SERVICE_PORT, label: 'service address' },
  remote: { host: SERVICE_REMOTE, port: SERVICE_PORT, label: 'service, remote' },
} as const;
type PathName = keyof typeof PATHS;

interface Run {
  rate: number;
  /** CPU time of the whole machine per connection in the rate run. */
  machineCpu: number;
  p50: number;
  p99: number;
  /** Packets queued to either agent, and SYNs the node's kernel let by for a pair of pods or sent fast after the DNAT, per sequential connect. */
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

/** The remote host's identity and configuration: its port admits pod A only. Returns the configuration's path. */
async function prepareRemote(directory: string): Promise<string> {
  const file = join(directory, 'remote.yaml');
  writeFileSync(
    file,
    stringify({
      ...(await issueRemoteAgent(directory)),
      admission: { protectedPorts: [REMOTE_PORT], allow: [{ subject: 'spiffe://cluster.synpass/ns/shop/sa/a' }] },
      targets: ['10.215.1.0/24', `${NODE_UPLINK}/32`],
    }),
  );
  return file;
}

/** An agent in namespace `ns` (the node, or the remote host), on the queue or with its kernel fast path. */
async function startAgent(lab: NodeLab, ns: string, directory: string, configFile: string, mode: Exclude<Mode, 'none'>): Promise<AgentHandle> {
  const socket = join(directory, `${ns}.sock`);
  const kernel = mode === 'kernel' ? [...lab.kernelFlags(ns), '--fast-path-state-file', join(directory, `${ns}-kernel-tables.json`)] : ['--kernel-fast-path', 'off'];
  const child = lab.spawn(ns, [...synpassCommand(), 'agent', 'run', '--config', configFile, '--status-socket', socket, ...kernel], lab.cgroup(ns));
  const agent = await untilAgentAnswers(child, socket, ns);
  await untilRehearsed([agent]);
  const status = await agent.status();
  const running = kernelFastPathOf(status).running;
  if (running !== (mode === 'kernel')) throw new Error(`the agent in ${ns} runs ${running ? 'with' : 'without'} the kernel fast path in mode ${mode}: ${kernelFastPathOf(status).reason}`);
  return agent;
}

/** The node's agent and the remote host's. */
interface Agents {
  node: AgentHandle;
  remote: AgentHandle;
}

async function measure(lab: NodeLab, agents: Agents | null, path: PathName): Promise<Run> {
  const launch = (command: string[]) => lab.spawn(lab.pods.a, command, lab.cgroup(lab.pods.a));
  const { host, port } = PATHS[path];
  // Discarded: warms the agent's code and, on the kernel path, makes the pair's first contact.
  await runLoadIn(launch, ['rate', host, String(port), String(config.rateConcurrency), '700', String(config.rateMax)]);
  const rate = await runLoadIn(launch, ['rate', host, String(port), String(config.rateConcurrency), String(config.rateMs), String(config.rateMax)]);
  if ((rate.failed ?? 0) > 0) process.stderr.write(`warning: ${rate.failed} connections failed (${path})\n`);
  const settled = () => (agents === null ? null : Promise.all([settledStatus(() => agents.node.status()), settledStatus(() => agents.remote.status())]));
  const before: AgentStatus[] | null = await settled();
  const latency = await runLoadIn(launch, ['sequential', host, String(port), String(config.sequentialCount)]);
  const run: Run = { rate: rate.perSecond!, machineCpu: rate.machineMicroseconds! / rate.completed!, p50: latency.p50!, p99: latency.p99! };
  const after = await settled();
  if (before === null || after === null) return run;
  const count = latency.count!;
  const queued = after.reduce((sum, status, i) => sum + (status.queue.received ?? 0) - (before[i]!.queue.received ?? 0), 0);
  // Without the kernel fast path the status has no counters: its kernel accepted nothing.
  const moved = kernelFastPathOf(after[0]).running ? countersMoved(kernelFastPathOf(before[0]), kernelFastPathOf(after[0])) : {};
  const kernel = (path === 'remote' ? moved.synSent : moved.podSynAccepted) ?? 0;
  return { ...run, queued: queued / count, kernelAccepted: kernel / count };
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
    const remote = `${lab.node.replace(/-node$/, '')}-rm`;
    lab.addHostBehindNode(remote, 'uplink', REMOTE_ADDRESS, NODE_UPLINK);
    const nat = (...rule: string[]) => execFileSync('ip', ['netns', 'exec', lab.node, 'iptables', '-t', 'nat', '-A', ...rule]);
    nat('PREROUTING', '-d', SERVICE, '-p', 'tcp', '--dport', String(SERVICE_PORT), '-j', 'DNAT', '--to-destination', `${POD_ADDRESS.b}:${SERVICE_TARGET_PORT}`);
    nat('PREROUTING', '-d', SERVICE_REMOTE, '-p', 'tcp', '--dport', String(SERVICE_PORT), '-j', 'DNAT', '--to-destination', `${REMOTE_ADDRESS}:${REMOTE_PORT}`);
    nat('POSTROUTING', '-s', '10.215.1.0/24', '-o', 'uplink', '-j', 'MASQUERADE');
    writeFileSync(join(directory, 'pods.json'), JSON.stringify([podJson('a'), podJson('b')]));
    writeFileSync(join(directory, 'nodes.json'), JSON.stringify([{ metadata: { name: 'node-1' }, spec: { taints: [] } }]));
    const api = lab.spawn(lab.node, [process.execPath, '--import', 'tsx', API, join(directory, 'pods.json'), '0', join(directory, 'nodes.json')], undefined, true);
    const apiPort = (await api.waitFor((l) => typeof l.listening === 'number')).listening as number;
    const configFile = await prepareNode(directory, apiPort);
    const remoteConfig = await prepareRemote(directory);
    for (const port of [SERVER_PORT, SERVICE_TARGET_PORT]) await startLoadServerIn((command) => lab.spawn(lab.pods.b, command, lab.cgroup(lab.pods.b)), port);
    await startLoadServerIn((command) => lab.spawn(remote, command, lab.cgroup(remote)), REMOTE_PORT);
    process.stdout.write(`bench-pods: pod A -> pod B on one node, and to a remote host through a service address, ${config.rounds} rounds: rate ${config.rateMs} ms at ${config.rateConcurrency} at once, ${config.sequentialCount} sequential connects\n`);
    const runs = Object.fromEntries(MODES.map((mode) => [mode, { direct: [] as Run[], service: [] as Run[], remote: [] as Run[] }])) as Record<Mode, Record<PathName, Run[]>>;
    for (let round = 0; round < config.rounds; round++) {
      for (const mode of round % 2 === 0 ? MODES : [...MODES].reverse()) {
        const agents = mode === 'none' ? null : { node: await startAgent(lab, lab.node, directory, configFile, mode), remote: await startAgent(lab, remote, directory, remoteConfig, mode) };
        for (const path of Object.keys(PATHS) as PathName[]) runs[mode][path].push(await measure(lab, agents, path));
        // A clean stop: the agents remove their rules and programs before the next mode.
        for (const agent of agents === null ? [] : [agents.node, agents.remote]) {
          if ((await agent.process.stop('SIGTERM', 15_000)) !== 0) throw new Error(`an agent did not stop cleanly: ${agent.process.stderr.join('')}`);
        }
      }
      process.stdout.write(`round ${round + 1} of ${config.rounds} done\n`);
    }
    process.stdout.write(`${report(runs).join('\n')}\n`);
  } finally {
    await lab.destroy();
  }
}

await main();
