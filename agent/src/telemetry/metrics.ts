// Prometheus metrics. Counters the datapath already keeps (queue counters in the addon's shared
// array, verdicts by reason, cache statistics) are read at scrape time, so the per-packet path
// pays only for the latency histogram and the per-rule counter. Label values come from closed
// sets (reasons, directions, actions) or from the policy's rule ids: never addresses or identities.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Direction, Stage } from '../datapath/handler.ts';
import type { FlowLogCounters } from './flow-log.ts';

type LatencyLabel = 'direction' | 'stage';
type LatencyByKind = Record<Direction, Record<Stage, Histogram.Internal<LatencyLabel>>>;

export interface MetricsSource {
  queue(): Record<string, number>;
  kernelQueue(): { dropped: number; userDropped: number; waiting: number } | null;
  verdicts(): { direction: string; action: string; reason: string; count: number }[];
  caches(): Record<string, { hits: number; misses: number }>;
  credentialExpiresAt(): number | null;
  /** Credential renewals from the issuer (null: none configured). */
  credentialRenewal(): { renewals: number; failures: number; failingSince: number | null } | null;
  policy(): { revision: string; reloadsOk: number; reloadsFailed: number } | null;
  /** Incoming SYNs that reached the host without a verdict (the kernel's fail-open). */
  unjudgedSyns(): number;
  /** Other rules ahead of the agent's hook jumps at the last rule check. */
  rulesAhead(): number;
  /** Times the agent found its rules removed and put them back. */
  rulesReinstalled(): number;
  /** The bounded log stream and the flow log (telemetry/log.ts, telemetry/flow-log.ts). */
  logging(): LoggingCounters;
  /** Every bounded table the agent holds, by name. */
  tables(): Record<string, { entries: number; capacity: number }>;
  /**
   * The kernel fast path: whether it runs, its kernel counters (none when it does not run), and
   * how many local ports' listeners keep their known pairs on the queue.
   */
  kernelFastPath(): { running: boolean; counters: Record<string, number>; listenersOnQueue: number };
  /** Resets sent to local servers whose SYN-ACK the agent refused, and sends the kernel refused. */
  serverResets(): { sent: number; failed: number };
}

export interface LoggingCounters {
  flowLog: FlowLogCounters;
  /** Bytes waiting for stdout, and lines dropped because too many did. */
  logPendingBytes: number;
  logDroppedLines: number;
}

export class AgentMetrics {
  readonly registry = new Registry();
  private readonly latency: Histogram<LatencyLabel>;
  /** The histogram's series per kind of packet, made once: `labels()` hashes its labels on every call. */
  readonly latencyOf: LatencyByKind;
  readonly ruleVerdicts: Counter<'rule' | 'action'>;

  constructor(source: MetricsSource) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'synpass_' });
    this.latency = new Histogram({
      name: 'synpass_verdict_latency_seconds',
      help: 'Time from a packet batch reaching the agent to the verdict on each of its packets, by kind of packet (a first contact verifies at the ingress syn and syn-ack)',
      labelNames: ['direction', 'stage'],
      buckets: [5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 2.5e-2],
      registers,
    });
    const byStage = (direction: Direction): Record<Stage, Histogram.Internal<LatencyLabel>> => ({
      syn: this.latency.labels(direction, 'syn'),
      'syn-ack': this.latency.labels(direction, 'syn-ack'),
      ack: this.latency.labels(direction, 'ack'),
    });
    this.latencyOf = { ingress: byStage('ingress'), egress: byStage('egress') };
    this.ruleVerdicts = new Counter({
      name: 'synpass_rule_verdicts_total',
      help: 'Handshake verdicts decided by a policy rule (default-deny included)',
      labelNames: ['rule', 'action'],
      registers,
    });
    new Counter({
      name: 'synpass_verdicts_total',
      help: 'Verdicts on queued packets by direction, action and reason (read from the agent counters at scrape time)',
      labelNames: ['direction', 'action', 'reason'],
      registers,
      collect() {
        this.reset();
        for (const row of source.verdicts()) this.inc({ direction: row.direction, action: row.action, reason: row.reason }, row.count);
      },
    });
    new Counter({
      name: 'synpass_queue_packets_total',
      help: 'NFQUEUE counters of the agent socket: received, accepted, dropped, rewritten, overruns (ENOBUFS), errors',
      labelNames: ['counter'],
      registers,
      collect() {
        this.reset();
        for (const [counter, value] of Object.entries(source.queue())) this.inc({ counter }, value);
      },
    });
    new Gauge({
      name: 'synpass_kernel_queue_packets',
      help: 'The kernel side of the queue (/proc/net/netfilter/nfnetlink_queue): dropped when full, dropped for user space, waiting; fail-open accepts show up as dropped=0 with failOpen set',
      labelNames: ['counter'],
      registers,
      collect() {
        this.reset();
        const kernel = source.kernelQueue();
        if (kernel === null) return;
        this.set({ counter: 'queue_dropped' }, kernel.dropped);
        this.set({ counter: 'user_dropped' }, kernel.userDropped);
        this.set({ counter: 'waiting' }, kernel.waiting);
      },
    });
    new Gauge({
      name: 'synpass_rules_ahead',
      help: 'Other rules ahead of the synpass jumps in mangle PREROUTING and POSTROUTING (every rule check): a packet they accept or drop is never judged',
      registers,
      collect() {
        this.set(source.rulesAhead());
      },
    });
    new Counter({
      name: 'synpass_rules_reinstalled_total',
      help: 'Times the agent found its rules removed by someone else (a flush, a firewall reload) and put them back: until then SYNs met no queue rule; alert on any increase',
      registers,
      collect() {
        this.reset();
        this.inc(source.rulesReinstalled());
      },
    });
    new Counter({
      name: 'synpass_unjudged_syns_total',
      help: 'Incoming SYNs that reached INPUT or FORWARD without a verdict: accepted by the kernel because the queue was full or no agent listened, which only --fail-open allows (read from the SYNPASS-AUDIT rule counter every rule check; failing closed there is no such rule and this stays 0)',
      registers,
      collect() {
        this.reset();
        this.inc(source.unjudgedSyns());
      },
    });
    new Gauge({
      name: 'synpass_kernel_fast_path_running',
      help: 'Whether the kernel fast path runs (1) or every handshake takes the queue (0); status says why',
      registers,
      collect() {
        this.set(source.kernelFastPath().running ? 1 : 0);
      },
    });
    new Gauge({
      name: 'synpass_kernel_fast_path_listeners_on_queue',
      help: 'Local ports whose listener answered a known pair without the kernel fast path (it listens outside the cgroup of the programs, or began listening before they were attached and was not swept): their pairs stay on the queue until it listens again; status lists the ports',
      registers,
      collect() {
        this.set(source.kernelFastPath().listenersOnQueue);
      },
    });
    new Counter({
      name: 'synpass_kernel_fast_path_total',
      help: 'Kernel fast-path events: SYNs sent, accepted, dropped by cause, SYN-ACKs signed and verified, fallbacks to the queue',
      labelNames: ['counter'],
      registers,
      collect() {
        this.reset();
        for (const [counter, value] of Object.entries(source.kernelFastPath().counters)) this.inc({ counter }, value);
      },
    });
    new Counter({
      name: 'synpass_server_resets_total',
      help: 'Resets sent to a local server (a pod, the node\'s own listener) whose SYN-ACK the agent refused, ending its half-open connection, by result (sent, failed: the kernel refused the send, e.g. no CAP_NET_RAW; that server then retransmits its SYN-ACK, each one refused again)',
      labelNames: ['result'],
      registers,
      collect() {
        this.reset();
        const resets = source.serverResets();
        this.inc({ result: 'sent' }, resets.sent);
        this.inc({ result: 'failed' }, resets.failed);
      },
    });
    new Counter({
      name: 'synpass_cache_lookups_total',
      help: 'Verified credential and token cache lookups by result',
      labelNames: ['cache', 'result'],
      registers,
      collect() {
        this.reset();
        for (const [cache, stats] of Object.entries(source.caches())) {
          this.inc({ cache, result: 'hit' }, stats.hits);
          this.inc({ cache, result: 'miss' }, stats.misses);
        }
      },
    });
    new Gauge({
      name: 'synpass_credential_expiry_seconds',
      help: 'Seconds until the agent credential expires (negative once expired)',
      registers,
      collect() {
        const expiresAt = source.credentialExpiresAt();
        if (expiresAt !== null) this.set(expiresAt - Date.now() / 1000);
      },
    });
    new Counter({
      name: 'synpass_credential_renewals_total',
      help: 'Credential renewals from the issuer by result (ok, failed)',
      labelNames: ['result'],
      registers,
      collect() {
        this.reset();
        const renewal = source.credentialRenewal();
        if (renewal === null) return;
        this.inc({ result: 'ok' }, renewal.renewals);
        this.inc({ result: 'failed' }, renewal.failures);
      },
    });
    new Gauge({
      name: 'synpass_credential_renewal_failing_seconds',
      help: 'Seconds since credential renewals started failing in a row (0 while they work): the issuer is unreachable or refuses',
      registers,
      collect() {
        const renewal = source.credentialRenewal();
        if (renewal !== null) this.set(renewal.failingSince === null ? 0 : Date.now() / 1000 - renewal.failingSince);
      },
    });
    new Counter({
      name: 'synpass_policy_reloads_total',
      help: 'Policy reloads by result',
      labelNames: ['result'],
      registers,
      collect() {
        const policy = source.policy();
        this.reset();
        if (policy === null) return;
        this.inc({ result: 'ok' }, policy.reloadsOk);
        this.inc({ result: 'failed' }, policy.reloadsFailed);
      },
    });
    new Counter({
      name: 'synpass_flow_log_dropped_total',
      help: 'Flow-log records that never became a line, by reason: backlog = the sink was behind (more than 2 MiB waiting)',
      labelNames: ['reason'],
      registers,
      collect() {
        this.reset();
        for (const [reason, count] of Object.entries(source.logging().flowLog.dropped)) this.inc({ reason }, count);
      },
    });
    new Counter({
      name: 'synpass_flow_log_aggregated_total',
      help: 'Drops folded into a per-second "N more drops from X for reason R" line instead of a line each',
      registers,
      collect() {
        this.reset();
        this.inc(source.logging().flowLog.aggregated);
      },
    });
    new Counter({
      name: 'synpass_log_dropped_lines_total',
      help: 'Log lines of any kind dropped because 8 MiB already waited for stdout',
      registers,
      collect() {
        this.reset();
        this.inc(source.logging().logDroppedLines);
      },
    });
    new Gauge({
      name: 'synpass_log_pending_bytes',
      help: 'Log bytes waiting for stdout (bounded at 8 MiB)',
      registers,
      collect() {
        this.set(source.logging().logPendingBytes);
      },
    });
    new Gauge({
      name: 'synpass_table_entries',
      help: 'Entries in each bounded table the agent holds (flows, nonces, known-servers, held-segments, credentials, tokens, whois-peers, flow-log-aggregates)',
      labelNames: ['table'],
      registers,
      collect() {
        this.reset();
        for (const [table, size] of Object.entries(source.tables())) this.set({ table }, size.entries);
      },
    });
    new Gauge({
      name: 'synpass_table_capacity',
      help: 'The most entries each bounded table holds; past it the oldest goes, or a new entry is refused under a counted reason',
      labelNames: ['table'],
      registers,
      collect() {
        this.reset();
        for (const [table, size] of Object.entries(source.tables())) this.set({ table }, size.capacity);
      },
    });
    new Gauge({
      name: 'synpass_policy_revision_info',
      help: 'The policy revision in force (value 1)',
      labelNames: ['revision'],
      registers,
      collect() {
        this.reset();
        const policy = source.policy();
        if (policy !== null) this.set({ revision: policy.revision }, 1);
      },
    });
  }
}
