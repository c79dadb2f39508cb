// scripts/bench: connection rate, sequential connect latency and bulk throughput between two
// lab namespaces, first without agents (the baseline), then with agents in both; printed as
// ratios against the baseline measured in this same run.
import { Lab, type AgentHandle } from '../../test/support/lab.ts';

const LOAD = new URL('./load.ts', import.meta.url).pathname;
const CONNECT_PORT = 9000;
const SINK_PORT = 9001;
const config = {
  rateConcurrency: 32,
  rateMs: Number(process.env.BENCH_RATE_MS ?? 4000),
  rateMax: 60_000,
  sequentialCount: Number(process.env.BENCH_SEQUENTIAL ?? 2000),
  bulkBytes: Number(process.env.BENCH_BULK_BYTES ?? 200e6),
  agentArgs: (process.env.BENCH_AGENT_ARGS ?? '').split(' ').filter(Boolean),
};

interface Results {
  rate: number;
  p50: number;
  p99: number;
  throughput: number;
  queued?: number;
}

async function load(lab: Lab, args: string[]): Promise<Record<string, number>> {
  const child = lab.spawn('web', [process.execPath, '--import', 'tsx', LOAD, ...args]);
  const line = await child.waitFor(() => true, 120_000);
  await child.exited;
  return line as Record<string, number>;
}

async function measure(lab: Lab): Promise<Results> {
  const host = lab.address('api');
  const rate = await load(lab, ['rate', host, String(CONNECT_PORT), String(config.rateConcurrency), String(config.rateMs), String(config.rateMax)]);
  const sequential = await load(lab, ['sequential', host, String(CONNECT_PORT), String(config.sequentialCount)]);
  // Bulk throughput swings run to run on a shared 2-core machine: take the median of three.
  const bulkRuns: number[] = [];
  for (let i = 0; i < 3; i++) {
    bulkRuns.push((await load(lab, ['bulk', host, String(SINK_PORT), String(config.bulkBytes)])).megabytesPerSecond!);
  }
  bulkRuns.sort((a, b) => a - b);
  if ((rate.failed ?? 0) > 0) process.stderr.write(`warning: ${rate.failed} connections failed\n`);
  return { rate: rate.perSecond!, p50: sequential.p50!, p99: sequential.p99!, throughput: bulkRuns[1]! };
}

function row(name: string, base: number, withAgents: number, unit: string, digits = 0): string {
  return `${name.padEnd(34)} ${base.toFixed(digits).padStart(10)} ${withAgents.toFixed(digits).padStart(10)} ${unit.padEnd(6)}`;
}

// Accepted-connection log lines cost the agent as much as a trip; benchmarks measure the
// datapath, so agents log warnings (drops) only.
process.env.SYNPASS_LOG_LEVEL ??= 'warn';
const lab = Lab.up('bn', 90);
let agents: AgentHandle[] = [];
try {
  await lab.spawn('api', [process.execPath, '--import', 'tsx', LOAD, 'server', String(CONNECT_PORT), String(SINK_PORT)]).waitFor((l) => l.listening === true);
  process.stderr.write('bench: baseline (no agents)\n');
  const baseline = await measure(lab);
  process.stderr.write(`bench: with agents ${config.agentArgs.join(' ')}\n`);
  agents = [await lab.startAgent('api', config.agentArgs), await lab.startAgent('web', config.agentArgs)];
  const before = await Promise.all(agents.map(async (a) => (await a.status()).queue.received ?? 0));
  const withAgents = await measure(lab);
  const after = await Promise.all(agents.map(async (a) => (await a.status()).queue.received ?? 0));
  const queued = after.reduce((sum, value, i) => sum + value - before[i]!, 0);

  const lines = [
    `${''.padEnd(34)} ${'baseline'.padStart(10)} ${'agents'.padStart(10)}`,
    `${row(`new connections/s (${config.rateConcurrency} concurrent)`, baseline.rate, withAgents.rate, '/s')} ratio ${(withAgents.rate / baseline.rate).toFixed(2)}x`,
    `${row('sequential connect p50', baseline.p50, withAgents.p50, 'us')} added ${(withAgents.p50 - baseline.p50).toFixed(0)} us`,
    `${row('sequential connect p99', baseline.p99, withAgents.p99, 'us')} added ${(withAgents.p99 - baseline.p99).toFixed(0)} us`,
    `${row(`bulk ${config.bulkBytes / 1e6} MB`, baseline.throughput, withAgents.throughput, 'MB/s')} ratio ${(withAgents.throughput / baseline.throughput).toFixed(3)}x`,
    `user-space trips (queued packets, both agents) in the agent phase: ${queued}`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
} finally {
  await lab.down();
}
