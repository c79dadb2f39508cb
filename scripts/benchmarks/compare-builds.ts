// scripts/bench-compare: the agents of two builds of synpass, measured on one lab in quick
// alternation (A B, B A, A B, ...), each alternation a few hundred sequential connects and a short
// rate run. An effect of 10-20 us per connection is smaller than the VM's drift between two runs
// of scripts/bench; alternating every few seconds cancels the drift, so before/after numbers of a
// hot-path change come from here. The rate run also gives the machine's CPU per connection: the
// rate is bound by the load generator's one thread, which pays the kernel's softirq work of the
// connections it opens, so a few microseconds of kernel work show there more steadily than in
// the rate. In the kernel modes the kernel also counts the time its synpass programs ran
// (kernel.bpf_stats_enabled, on for the run: two clock reads more per program run, on both sides
// alike): their own cost per connection, apart from the rest of the machine's CPU. Each build is
// a tree with its own dist/ and native addon.
//   node --import tsx scripts/benchmarks/compare-builds.ts <treeA> <treeB>
//   COMPARE_ALTERNATIONS=6 COMPARE_CONNECTS=400 COMPARE_RATE_MS=1000 COMPARE_MODES=pass-through,identity
//   COMPARE_SETTLE_MS=3000: how long fresh agents run before they are measured.
//   COMPARE_BUSY=2: that many CPU-bound processes run beside the agents throughout, as on a busy
//   node; a change that helps an idle host can cost milliseconds there (a yielding agent did).
//   COMPARE_MODES=kernel: identity agents on the kernel fast path (a known pair proven in the
//   kernel, each tree with its own programs); kernel-first-contact: the same agents, caches (and
//   their kernels' entries) flushed before every connect. Kernel modes run without the others,
//   since their lab is a kernel lab.
//   COMPARE_CA_KEYS=p256,ed25519: A's and B's agents get credentials of a trust domain of their own
//   with that CA key type (default: one domain, the default type, for both), so the effect of a
//   domain's key type on first contact is measured alone when A and B are one tree.
//   COMPARE_NODE_FLAGS_A, COMPARE_NODE_FLAGS_B: flags for the node that runs A's or B's agents
//   (space-separated, e.g. --max-semi-space-size=1), one tree against itself the same way.
//   COMPARE_AGENT_ARGS_A, COMPARE_AGENT_ARGS_B: more `synpass agent run` arguments for A's or B's
//   agents, after the lab's own (e.g. --kernel-fast-path off: the queue path in a kernel lab; give
//   it to B, since the kernel lab's listener starts beside A's first agents and signs fast
//   SYN-ACKs only if programs were attached then).
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { prepareIdentities, type IdentityLabFiles } from '../lib/identity-lab.ts';
import { SIGNING_KEY_TYPES, type SigningKeyType } from '../../agent/src/identity/issuance.ts';
import { Lab, sleep, type AgentHandle } from '../lib/lab.ts';
import { agentsLogWarningsOnly, median, runLoad, startLoadServer } from './lab-load.ts';
import { enableProgramStats, synpassProgramNanoseconds } from './program-time.ts';

const PORT = 8080;
const MODES = ['pass-through', 'identity', 'first-contact', 'kernel', 'kernel-first-contact'] as const;
const KERNEL_MODES: readonly Mode[] = ['kernel', 'kernel-first-contact'];
const FIRST_CONTACT_MODES: readonly Mode[] = ['first-contact', 'kernel-first-contact'];
type Mode = (typeof MODES)[number];

/** Space-separated words of an environment variable (none when unset). */
function words(value: string | undefined): string[] {
  return value?.split(' ').filter((word) => word !== '') ?? [];
}

const config = {
  alternations: Number(process.env.COMPARE_ALTERNATIONS ?? 6),
  connects: Number(process.env.COMPARE_CONNECTS ?? 400),
  firstContactConnects: Number(process.env.COMPARE_FIRST_CONTACT ?? 100),
  rateMs: Number(process.env.COMPARE_RATE_MS ?? 1000),
  modes: (process.env.COMPARE_MODES ?? 'pass-through,identity').split(',') as Mode[],
  busyProcesses: Number(process.env.COMPARE_BUSY ?? 0),
  settleMs: Number(process.env.COMPARE_SETTLE_MS ?? 3000),
  caKeys: process.env.COMPARE_CA_KEYS?.split(',') as SigningKeyType[] | undefined,
  nodeFlags: [process.env.COMPARE_NODE_FLAGS_A, process.env.COMPARE_NODE_FLAGS_B].map(words),
  agentArgs: [process.env.COMPARE_AGENT_ARGS_A, process.env.COMPARE_AGENT_ARGS_B].map(words),
};
/** A busy neighbour gives up on its own after this long, should nothing stop it. */
const BUSY_LIMIT_MS = 3_600_000;

const trees = process.argv.slice(2, 4).map((tree) => resolve(tree));
if (trees.length !== 2) {
  process.stderr.write('usage: compare-builds.ts <treeA> <treeB>\n');
  process.exit(2);
}
for (const tree of trees) {
  for (const built of ['dist/agent/src/cli/main.js', 'native/build/Release/synpass_nfq.node']) {
    if (!existsSync(join(tree, built))) throw new Error(`${tree} has no ${built}: build it first (npm run build)`);
  }
}
for (const mode of config.modes) if (!MODES.includes(mode)) throw new Error(`unknown mode ${mode} (${MODES.join(', ')})`);
if (config.caKeys !== undefined && (config.caKeys.length !== 2 || !config.caKeys.every((type) => SIGNING_KEY_TYPES.includes(type)))) {
  throw new Error(`COMPARE_CA_KEYS must name two CA key types, A's and B's (${SIGNING_KEY_TYPES.join(', ')})`);
}
// In a kernel lab every agent runs the fast path, so the other modes would not measure theirs.
const kernelLab = config.modes.some((mode) => KERNEL_MODES.includes(mode));
if (kernelLab && !config.modes.every((mode) => KERNEL_MODES.includes(mode))) throw new Error(`the kernel modes (${KERNEL_MODES.join(', ')}) run without the others`);

interface Sample {
  p50: number;
  p99: number;
  rate: number;
  /** Machine CPU per connection in the rate run, microseconds (idle and steal excluded). */
  cpu: number;
  /** Kernel modes: the synpass programs' run time per connection in the rate run, nanoseconds (both agents). */
  programs: number;
}

agentsLogWarningsOnly();

const directory = mkdtempSync(join(tmpdir(), 'synpass-compare-'));
const lab = Lab.up('cb', 91, { kernel: kernelLab });
const restoreProgramStats = kernelLab ? enableProgramStats() : null;
const neighbours: ChildProcess[] = Array.from({ length: config.busyProcesses }, () =>
  spawn(process.execPath, ['-e', `const end = Date.now() + ${BUSY_LIMIT_MS}; while (Date.now() < end);`], { stdio: 'ignore' }),
);
try {
  const caKeys = config.caKeys;
  const files: IdentityLabFiles[] =
    caKeys === undefined
      ? [await prepareIdentities(lab, directory)]
      : [await prepareIdentities(lab, join(directory, 'a'), undefined, caKeys[0]), await prepareIdentities(lab, join(directory, 'b'), undefined, caKeys[1])];
  // A listener signs fast SYN-ACKs only if it began listening while the programs were attached
  // (they stay enabled on it across agent restarts): in the kernel lab it starts after the first agents.
  let loadServer = kernelLab ? null : await startLoadServer(lab, PORT);
  const agentArgs = (side: number, mode: Mode, host: 'api' | 'web'): string[] => [
    ...(mode === 'pass-through' ? [] : ['--config', (files[side] ?? files[0]!).configs[host]]),
    ...config.agentArgs[side]!,
  ];
  const startAgents = async (side: number, mode: Mode): Promise<AgentHandle[]> => {
    const command = [process.execPath, ...config.nodeFlags[side]!, join(trees[side]!, 'dist/agent/src/cli/main.js')];
    return [await lab.startAgent('api', agentArgs(side, mode, 'api'), {}, true, command), await lab.startAgent('web', agentArgs(side, mode, 'web'), {}, true, command)];
  };
  const target = [lab.address('api'), String(PORT)];
  const samples = new Map<string, Sample[]>();
  for (const mode of config.modes) {
    for (let round = 0; round < config.alternations; round++) {
      for (const side of round % 2 === 0 ? [0, 1] : [1, 0]) {
        process.stderr.write(`compare: ${mode}, alternation ${round + 1} of ${config.alternations}, ${'AB'[side]} ${trees[side]}\n`);
        const agents = await startAgents(side, mode);
        // What a build does after it starts (the first-contact rehearsal, say) is over before it is measured.
        await sleep(config.settleMs);
        loadServer ??= await startLoadServer(lab, PORT);
        // A fresh agent's code is not compiled yet: the first connects are discarded.
        await runLoad(lab, ['sequential', ...target, '200']);
        const firstContact = FIRST_CONTACT_MODES.includes(mode);
        const flush = firstContact ? agents.map((agent) => agent.socket) : [];
        const latency = await runLoad(lab, ['sequential', ...target, String(firstContact ? config.firstContactConnects : config.connects), ...flush]);
        const programsBefore = kernelLab && !firstContact ? synpassProgramNanoseconds() : Number.NaN;
        const rate = firstContact ? null : await runLoad(lab, ['rate', ...target, '32', String(config.rateMs), '60000']);
        const programs = rate === null || !kernelLab ? Number.NaN : (synpassProgramNanoseconds() - programsBefore) / rate.completed!;
        for (const agent of agents) await agent.process.stop();
        const key = `${mode} ${side}`;
        const sample = { p50: latency.p50!, p99: latency.p99!, rate: rate?.perSecond ?? Number.NaN, cpu: rate === null ? Number.NaN : rate.machineMicroseconds! / rate.completed!, programs };
        samples.set(key, [...(samples.get(key) ?? []), sample]);
      }
    }
  }

  const fmt = (value: number, digits = 0): string => (Number.isFinite(value) ? value.toFixed(digits) : '-');
  const lines = [
    ...[0, 1].map((side) => `${'AB'[side]}: ${trees[side]}${caKeys === undefined ? '' : `, ${caKeys[side]} CA key`}${config.nodeFlags[side]!.length === 0 ? '' : `, node ${config.nodeFlags[side]!.join(' ')}`}${config.agentArgs[side]!.length === 0 ? '' : `, agents ${config.agentArgs[side]!.join(' ')}`}`),
    `${config.alternations} alternations per mode; each: ${config.connects} sequential connects (first contact ${config.firstContactConnects}) and a ${config.rateMs} ms rate run at 32 concurrent` +
      (config.busyProcesses > 0 ? `; ${config.busyProcesses} CPU-bound processes running beside them` : ''),
    ['mode'.padEnd(20), 'A p50'.padStart(7), 'B p50'.padStart(7), 'B-A'.padStart(6), 'range'.padStart(12), 'A p99'.padStart(7), 'B p99'.padStart(7), 'A conn/s'.padStart(9), 'B conn/s'.padStart(9), 'B/A'.padStart(6), 'range'.padStart(10), 'B-A cpu'.padStart(8), 'range'.padStart(12), 'A prog'.padStart(7), 'B prog'.padStart(7), 'B-A prog'.padStart(9), 'range'.padStart(12)].join(' '),
  ];
  for (const mode of config.modes) {
    const a = samples.get(`${mode} 0`)!;
    const b = samples.get(`${mode} 1`)!;
    // Alternation i of A is paired with alternation i of B: they ran back to back.
    const differences = a.map((sample, i) => b[i]!.p50 - sample.p50);
    const ratios = a.map((sample, i) => b[i]!.rate / sample.rate);
    const cpu = a.map((sample, i) => b[i]!.cpu - sample.cpu);
    const programs = a.map((sample, i) => b[i]!.programs - sample.programs);
    lines.push(
      [
        mode.padEnd(20),
        `${fmt(median(a.map((s) => s.p50)))}us`.padStart(7),
        `${fmt(median(b.map((s) => s.p50)))}us`.padStart(7),
        fmt(median(differences)).padStart(6),
        `${fmt(Math.min(...differences))}..${fmt(Math.max(...differences))}`.padStart(12),
        `${fmt(median(a.map((s) => s.p99)))}us`.padStart(7),
        `${fmt(median(b.map((s) => s.p99)))}us`.padStart(7),
        fmt(median(a.map((s) => s.rate))).padStart(9),
        fmt(median(b.map((s) => s.rate))).padStart(9),
        `${fmt(median(ratios), 2)}x`.padStart(6),
        `${fmt(Math.min(...ratios), 2)}-${fmt(Math.max(...ratios), 2)}`.padStart(10),
        fmt(median(cpu), 1).padStart(8),
        `${fmt(Math.min(...cpu), 1)}..${fmt(Math.max(...cpu), 1)}`.padStart(12),
        fmt(median(a.map((s) => s.programs))).padStart(7),
        fmt(median(b.map((s) => s.programs))).padStart(7),
        fmt(median(programs)).padStart(9),
        `${fmt(Math.min(...programs))}..${fmt(Math.max(...programs))}`.padStart(12),
      ].join(' '),
    );
  }
  lines.push(
    'B-A: median over alternations of B p50 minus the A p50 measured next to it; B/A: the same for the rate; B-A cpu: the same for the ' +
      'machine CPU per connection of the rate run, microseconds (all cores, idle and steal excluded): steadier than the rate, which the ' +
      'load generator\'s own thread bounds here; A prog, B prog, B-A prog: the run time of both agents\' synpass programs per connection of ' +
      'the rate run, nanoseconds, as the kernel counts it (kernel modes), and its paired differences',
  );
  process.stdout.write(`${lines.join('\n')}\n`);
} finally {
  restoreProgramStats?.();
  for (const neighbour of neighbours) neighbour.kill('SIGKILL');
  await lab.down();
  rmSync(directory, { recursive: true, force: true });
}
