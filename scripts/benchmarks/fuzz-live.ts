// scripts/fuzz-live: structure-aware mutations of real handshake packets (SYN, SYN-ACK and ACK
// of first contacts over IPv4 and IPv6 and of a known pair, captured on the lab's switch) sent
// by the outsider to api's live agent. It passes with no crash, no hang (status answers all
// along), no wrongful accept (the lab's switch sees no SYN-ACK from api, to anyone) and flat
// memory. With the kernel fast path (SYNPASS_TEST_KERNEL_FAST_PATH=1) the known pairs' fast SYNs
// are fuzzed too, sent with web's address as their source so that api's tc program finds web's
// entry and checks the MAC: api's kernel must accept none of them (a mutant that keeps what the
// MAC covers is a replay of the captured SYN). Root; bounded in count and time. Library for
// test/e2e/attack.test.ts, CLI when run.
//   FUZZ_PACKETS=1000000 FUZZ_RATE=20000 FUZZ_SEED=20261203 [SYNPASS_TEST_KERNEL_FAST_PATH=1] scripts/fuzz-live
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { apiMetrics, captureHandshake, inject, metric, readdressed, rssSampler, SERVICE_PORT, startAttackLab, verdictsBetween, writePackets } from '../lib/attack-lab.ts';
import { ROOT, sleep, type AgentStatus } from '../lib/lab.ts';
import { ParsedPacket, parsePacket, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN } from '../../agent/src/datapath/packet.ts';
import { FAST_COUNTERS, type FastCounter } from '../../agent/src/kernel/layouts.ts';

export interface FuzzConfig {
  packets: number;
  perSecond: number;
  seed: number;
  prefix?: string;
  net?: number;
}

export interface FuzzResult {
  sent: number;
  perSecond: number;
  /** Verdicts the agent gave during the run, by reason. */
  verdicts: Record<string, number>;
  judged: number;
  /** Packets the kernel dropped because the queue was full (fail closed). */
  queueDropped: number;
  agentAlive: boolean;
  /** Status requests that took longer than 2 s or failed while the fuzz ran. */
  statusStalls: number;
  statusChecks: number;
  /** SYN-ACKs from api during the run, to the fuzzer or to the host whose address it forged: any one is a wrongful accept. */
  wrongfulAccepts: number;
  /** SYNs api's kernel accepted during the run (kernel fast path): any one is a wrongful accept. */
  kernelAccepts: number;
  /** api's kernel fast-path counters over the run (empty without the fast path). */
  kernelCounters: Partial<Record<FastCounter, number>>;
  /** Other TCP from api during the run by flags (RSTs answer stray segments; the kernel sends them). */
  otherTcpFromApi: Record<string, number>;
  /** ICMP from api to the fuzzer (the kernel's answers to malformed IP, before any agent). */
  icmpFromApi: number;
  rssMiB: { start: number; peak: number; end: number; samples: number[] };
  legitimateAfter: boolean;
}

const CAPTURE = join(ROOT, 'scripts/lib/capture-probe.ts');

/** The TCP flags of each captured packet, as names joined by '-' ("SYN-ACK", "RST", "RST-ACK"). */
function tcpFlags(lines: Record<string, unknown>[]): string[] {
  const packet = new ParsedPacket();
  return lines.flatMap((l) => {
    if (typeof l.hex !== 'string') return [];
    const bytes = Buffer.from(l.hex, 'hex');
    if (!parsePacket(bytes, 0, bytes.length, packet)) return ['unparsed'];
    const names = (['SYN', 'RST', 'FIN', 'ACK'] as const).filter((_, i) => (packet.flags & [TCP_SYN, TCP_RST, TCP_FIN, TCP_ACK][i]!) !== 0);
    return [names.join('-')];
  });
}

async function statusWithin(read: () => Promise<AgentStatus>, ms: number): Promise<AgentStatus | null> {
  return Promise.race([read().catch(() => null), sleep(ms).then(() => null)]);
}

export async function fuzzLive(config: FuzzConfig, progress: (text: string) => void = () => undefined): Promise<FuzzResult> {
  const directory = mkdtempSync(join(tmpdir(), 'synpass-fuzz-'));
  // Every packet reaches the agent: no per-source limit in front of the queue.
  const fixture = await startAttackLab({
    prefix: config.prefix ?? 'fz',
    net: config.net ?? 97,
    apiEnv: { SYNPASS_DATAPATH_QUEUE_RATE_PER_SOURCE: '0' },
    serviceSeconds: config.packets / config.perSecond + 180,
  });
  const { lab, api } = fixture;
  try {
    const outsider = { 4: lab.address('outsider'), 6: lab.address('outsider', 6) };
    const apiAddress = { 4: lab.address('api'), 6: lab.address('api', 6) };
    const bases: Uint8Array[] = [];
    const kernel = lab.options.kernel === true;
    const captures: [4 | 6, boolean][] = kernel ? [[4, true], [6, true], [4, false], [6, false]] : [[4, true], [6, true], [4, false]];
    for (const [family, firstContact] of captures) {
      const captured = await captureHandshake(fixture, family, firstContact);
      bases.push(...[captured.syn, captured.synAck, captured.ack].map((p) => readdressed(p, outsider[family], apiAddress[family])));
      // The fast SYN as web sent it: from any other address api's kernel finds no entry.
      if (kernel && !firstContact) bases.push(captured.syn);
    }
    progress(`captured ${bases.length} handshake packets; fuzzing`);
    const filter = (protocols: string) => `(${protocols}) and (src host ${apiAddress[4]} or src host ${apiAddress[6]})`;
    const seconds = Math.ceil(config.packets / config.perSecond) + 30;
    // On the switch: api's answers to forged sources go to web, not to the fuzzer.
    const tcpWatch = await lab.capture(filter('tcp'), 100_000, seconds * 1000);
    const icmpWatch = lab.spawn('outsider', [process.execPath, '--import', 'tsx', CAPTURE, 'eth0', filter('icmp or icmp6'), '1000', String(seconds * 1000)], { stdin: true });
    await icmpWatch.waitFor((l) => l.ready === true);

    const kernelCounters = async (): Promise<Partial<Record<FastCounter, number>>> => {
      if (!kernel) return {};
      const text = await apiMetrics(lab);
      return Object.fromEntries(FAST_COUNTERS.map((counter) => [counter, metric(text, 'synpass_kernel_fast_path_total', `counter="${counter}"`)]));
    };
    const countersBefore = await kernelCounters();
    const before = await api.status();
    const memory = rssSampler(api.process.pid, 1_000);
    const sender = inject(lab, 'fuzz', writePackets(join(directory, 'bases.hex'), bases), [String(config.packets), String(config.perSecond), String(config.seed)]);
    let statusChecks = 0;
    let statusStalls = 0;
    // Status is asked every 2 s while the fuzz runs: an agent stuck on a packet would not answer.
    while (sender.lines.every((l) => typeof l.sent !== 'number')) {
      await sleep(2_000);
      statusChecks += 1;
      if ((await statusWithin(() => api.status(), 2_000)) === null) statusStalls += 1;
      if (statusChecks * 2 > seconds) break;
    }
    const sent = await sender.waitFor((l) => typeof l.sent === 'number', 5_000);
    await sleep(1_500);
    const rss = memory.stop();
    const after = await statusWithin(() => api.status(), 5_000);
    const countersAfter = after === null ? countersBefore : await kernelCounters();
    await tcpWatch.stop();
    await icmpWatch.stop();
    const agentAlive = after !== null;
    const verdicts = after === null ? {} : verdictsBetween(before, after);
    const legitimate = await lab.peerOnce('web', ['http', lab.address('api'), String(SERVICE_PORT)]).catch(() => ({ status: 0 }));
    return {
      sent: Number(sent.sent),
      perSecond: Number(sent.perSecond),
      verdicts,
      judged: Object.values(verdicts).reduce((sum, n) => sum + n, 0),
      queueDropped: (after?.kernelQueue?.dropped ?? 0) - (before.kernelQueue?.dropped ?? 0),
      agentAlive,
      statusStalls,
      statusChecks,
      wrongfulAccepts: tcpFlags(tcpWatch.lines).filter((f) => f === 'SYN-ACK').length,
      kernelAccepts: verdicts['accept:ok-kernel'] ?? 0,
      kernelCounters: Object.fromEntries(Object.entries(countersAfter).map(([counter, value]) => [counter, value - (countersBefore[counter as FastCounter] ?? 0)])),
      otherTcpFromApi: Object.fromEntries([...new Set(tcpFlags(tcpWatch.lines))].filter((f) => f !== 'SYN-ACK').map((f) => [f, tcpFlags(tcpWatch.lines).filter((g) => g === f).length])),
      icmpFromApi: icmpWatch.lines.filter((l) => typeof l.hex === 'string').length,
      rssMiB: { start: rss.samples[0] ?? Number.NaN, peak: rss.peak, end: rss.samples.at(-1) ?? Number.NaN, samples: rss.samples },
      legitimateAfter: legitimate.status === 200,
    };
  } finally {
    await fixture.down();
    rmSync(directory, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const env = process.env;
  const result = await fuzzLive(
    { packets: Number(env.FUZZ_PACKETS ?? 1_000_000), perSecond: Number(env.FUZZ_RATE ?? 20_000), seed: Number(env.FUZZ_SEED ?? 20261203) },
    (text) => process.stderr.write(`fuzz-live: ${text}\n`),
  );
  const { samples, ...rss } = result.rssMiB;
  process.stdout.write(`${JSON.stringify({ ...result, rssMiB: { ...rss, everySecond: samples.map((s) => Math.round(s)) } }, null, 2)}\n`);
  const passed = result.agentAlive && result.statusStalls === 0 && result.wrongfulAccepts === 0 && result.kernelAccepts === 0 && result.legitimateAfter;
  process.stdout.write(`fuzz-live: ${passed ? 'passed' : 'FAILED'}\n`);
  process.exitCode = passed ? 0 : 1;
}
