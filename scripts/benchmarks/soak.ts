// scripts/soak: the agents under everything at once for a long time. web keeps connecting to
// api (known pair, a first contact every few seconds, one connection held open throughout),
// api's policy is edited every 30 s, the agents' keys rotate every 2 minutes in turn, and the
// outsider floods api with token-less SYNs in the background. api's RSS and heap are sampled
// every 10 s. The agents log at their default level (info: a line per accepted connection).
// It passes when no legitimate connection failed, the held one still echoes, memory is flat after
// the warm-up and every table is within its capacity; with the kernel fast path
// (SYNPASS_TEST_KERNEL_FAST_PATH=1), also when api's kernel accepted at least half of the
// connections itself (known pairs stay on the fast path through the edits and rotations). Root;
// bounded in time. Library for test/e2e/attack.test.ts.
//   SOAK_SECONDS=600 SOAK_RELOAD_SECONDS=30 SOAK_ROTATE_SECONDS=120 SOAK_SAMPLE_SECONDS=10 SOAK_FLOOD_RATE=2000 [SYNPASS_TEST_KERNEL_FAST_PATH=1] scripts/soak
import { appendFileSync, cpSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { flushCaches } from '../../agent/src/telemetry/status-client.ts';
import { apiMetrics, ECHO_PORT, inject, metric, SERVICE_PORT, startAttackLab, verdictsBetween, writePackets } from '../lib/attack-lab.ts';
import { rssMiB } from '../lib/proc.ts';
import { rotateAgent } from '../lib/identity-lab.ts';
import { ROOT } from '../lib/lab.ts';
import { plainSyn } from '../lib/packets.ts';
import { runLoad } from './lab-load.ts';

export interface SoakConfig {
  seconds: number;
  reloadSeconds: number;
  rotateSeconds: number;
  sampleSeconds: number;
  /** Token-less SYNs a second from the outsider; 0: none. */
  floodRate: number;
  prefix?: string;
  net?: number;
}

export interface SoakSample {
  atSeconds: number;
  rssMiB: number;
  heapUsedMiB: number;
  heapTotalMiB: number;
  externalMiB: number;
  /** Entries of every bounded table, summed. */
  tableEntries: number;
}

export interface SoakResult {
  connections: { completed: number; failed: number; firstContacts: number };
  /** Whether the agents ran the kernel fast path, and the SYNs api's kernel accepted (ok-kernel). */
  kernel: boolean;
  kernelAccepted: number;
  heldConnectionEchoes: boolean;
  policyReloads: number;
  rotations: number;
  floodSent: number;
  samples: SoakSample[];
  /** Growth from the first samples after the warm-up to the last ones, MiB. */
  rssGrowthMiB: number;
  heapGrowthMiB: number;
  peakRssMiB: number;
  /** api's tables at the end. */
  tables: Record<string, { entries: number; capacity: number }>;
  agentAlive: boolean;
}

/** The mean of the first and of the last `n` samples after the warm-up (the first quarter). */
function growth(values: number[], n = 3): number {
  const settled = values.slice(Math.floor(values.length / 4));
  if (settled.length < 2 * n) return settled.length < 2 ? 0 : settled.at(-1)! - settled[0]!;
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  return mean(settled.slice(-n)) - mean(settled.slice(0, n));
}

export async function soak(config: SoakConfig, progress: (text: string) => void = () => undefined): Promise<SoakResult> {
  const directory = join(tmpdir(), `synpass-soak-${process.pid}`);
  const policy = join(directory, 'policy');
  mkdirSync(directory, { recursive: true });
  cpSync(join(ROOT, 'policy/examples/three-tier'), policy, { recursive: true });
  const fixture = await startAttackLab({ prefix: config.prefix ?? 'sk', net: config.net ?? 98, policyDirectory: policy, serviceSeconds: config.seconds + 120, logLevel: 'info' });
  const { lab, api, web } = fixture;
  try {
    const held = lab.peer('web', ['hold', lab.address('api'), String(ECHO_PORT)], { stdin: true });
    await held.waitFor((l) => l.connected === true);
    const flood =
      config.floodRate === 0
        ? null
        : inject(lab, 'replay', writePackets(join(directory, 'flood.hex'), Array.from({ length: 1024 }, (_, i) => plainSyn(lab.address('outsider'), lab.address('api'), SERVICE_PORT, 2048 + i, randomBytes(4).readUInt32BE(0)))), [
            String(config.floodRate),
            String(config.seconds + 5),
          ]);
    const started = Date.now();
    const elapsed = () => (Date.now() - started) / 1000;
    const samples: SoakSample[] = [];
    let nextSample = 0;
    let nextReload = config.reloadSeconds;
    let nextRotation = config.rotateSeconds;
    let rotations = 0;
    let edits = 0;
    let firstContacts = 0;
    const connections = { completed: 0, failed: 0 };
    const reloadsBefore = metric(await apiMetrics(lab), 'synpass_policy_reloads_total', 'result="ok"');
    const statusBefore = await api.status();
    while (elapsed() < config.seconds) {
      if (elapsed() >= nextSample) {
        const text = await apiMetrics(lab);
        const mib = (name: string) => metric(text, name) / 1024 / 1024;
        const tables = Object.values((await api.status()).tables).reduce((sum, t) => sum + t.entries, 0);
        samples.push({
          atSeconds: Math.round(elapsed()),
          rssMiB: rssMiB(api.process.pid),
          heapUsedMiB: mib('synpass_nodejs_heap_size_used_bytes'),
          heapTotalMiB: mib('synpass_nodejs_heap_size_total_bytes'),
          externalMiB: mib('synpass_nodejs_external_memory_bytes'),
          tableEntries: tables,
        });
        nextSample += config.sampleSeconds;
      }
      if (elapsed() >= nextReload) {
        // A real edit: the watcher sees new content and reloads the set.
        appendFileSync(join(policy, 'api.yaml'), `# soak edit ${++edits}\n`);
        nextReload += config.reloadSeconds;
      }
      if (elapsed() >= nextRotation) {
        const host = rotations % 2 === 0 ? 'api' : 'web';
        progress(`${Math.round(elapsed())} s: rotating ${host}'s keys`);
        await rotateAgent(fixture.files, host, host === 'api' ? api : web);
        rotations += 1;
        nextRotation += config.rotateSeconds;
      }
      // A first contact now and then, among known-pair connections.
      await flushCaches(web.socket);
      const first = await runLoad(lab, ['sequential', lab.address('api'), String(SERVICE_PORT), '1']);
      firstContacts += first.count!;
      if (first.count !== 1) connections.failed += 1;
      const window = Math.max(500, Math.min(3_000, (config.seconds - elapsed()) * 1000));
      const load = await runLoad(lab, ['rate', lab.address('api'), String(SERVICE_PORT), '4', String(window), '100000']);
      connections.completed += load.completed!;
      connections.failed += load.failed!;
    }
    held.write('still there\n');
    const echoed = await held.waitFor((l) => l.echoed === 'still there', 5_000).then(() => true, () => false);
    const floodSent = flood === null ? 0 : Number((await flood.waitFor((l) => typeof l.sent === 'number', 20_000)).sent);
    const reloads = metric(await apiMetrics(lab), 'synpass_policy_reloads_total', 'result="ok"') - reloadsBefore;
    const last = await api.status().catch(() => null);
    const agentAlive = last !== null;
    return {
      connections: { ...connections, firstContacts },
      kernel: lab.options.kernel === true,
      kernelAccepted: last === null ? 0 : (verdictsBetween(statusBefore, last)['accept:ok-kernel'] ?? 0),
      heldConnectionEchoes: echoed,
      policyReloads: reloads,
      rotations,
      floodSent,
      samples,
      rssGrowthMiB: growth(samples.map((s) => s.rssMiB)),
      heapGrowthMiB: growth(samples.map((s) => s.heapUsedMiB)),
      peakRssMiB: Math.max(...samples.map((s) => s.rssMiB)),
      tables: last?.tables ?? {},
      agentAlive,
    };
  } finally {
    await fixture.down();
    rmSync(directory, { recursive: true, force: true });
  }
}

/** Flat: under this much growth after the warm-up. */
export const FLAT_RSS_MIB = 20;
export const FLAT_HEAP_MIB = 10;

/** With the kernel fast path, at least this share of the connections is accepted by api's kernel. */
export const KERNEL_SHARE = 0.5;

export function soakPassed(result: SoakResult): boolean {
  const total = result.connections.completed + result.connections.firstContacts;
  return (
    result.agentAlive &&
    (!result.kernel || result.kernelAccepted >= KERNEL_SHARE * total) &&
    Object.values(result.tables).every((table) => table.entries <= table.capacity) &&
    result.connections.failed === 0 &&
    result.heldConnectionEchoes &&
    result.rssGrowthMiB < FLAT_RSS_MIB &&
    result.heapGrowthMiB < FLAT_HEAP_MIB &&
    result.peakRssMiB <= 200
  );
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const env = process.env;
  const result = await soak(
    {
      seconds: Number(env.SOAK_SECONDS ?? 600),
      reloadSeconds: Number(env.SOAK_RELOAD_SECONDS ?? 30),
      rotateSeconds: Number(env.SOAK_ROTATE_SECONDS ?? 120),
      sampleSeconds: Number(env.SOAK_SAMPLE_SECONDS ?? 10),
      floodRate: Number(env.SOAK_FLOOD_RATE ?? 2000),
    },
    (text) => process.stderr.write(`soak: ${text}\n`),
  );
  const { samples, ...summary } = result;
  process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
  const rows = samples.map((s) => `| ${s.atSeconds} | ${s.rssMiB.toFixed(1)} | ${s.heapUsedMiB.toFixed(1)} | ${s.heapTotalMiB.toFixed(1)} | ${s.externalMiB.toFixed(1)} | ${s.tableEntries} |`);
  process.stdout.write(`${['| s | RSS MiB | heap used MiB | heap total MiB | external MiB | table entries |', '|---|---|---|---|---|---|', ...rows].join('\n')}\n`);
  const passed = soakPassed(result);
  process.stdout.write(`soak: ${passed ? 'passed' : 'FAILED'}\n`);
  process.exitCode = passed ? 0 : 1;
}
