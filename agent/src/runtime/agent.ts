// The agent process: serve status and probes, bind the queues, then install the rules (so no
// queued packet ever waits for a listener that is not there yet), and undo both on SIGINT/SIGTERM.
import { constants } from 'node:os';
import type { Server } from 'node:http';
import type { Server as NetServer } from 'node:net';
import { destinationAddress, sourceAddress } from '../datapath/addresses.ts';
import { liveTcpSockets } from '../whois/proc-net-tcp.ts';
import { connectionKey, PeerRegistry } from '../whois/registry.ts';
import { startWhoisServer } from '../whois/server.ts';
import { DatapathEngine } from '../datapath/engine.ts';
import { inspectRules, installRules, removeAllRules, type InstalledRules } from '../datapath/iptables.ts';
import { readKernelQueues } from '../datapath/kernel-queue.ts';
import type { RuleOptions } from '../datapath/rules.ts';
import { startHttpEndpoint, type Readiness } from '../telemetry/http-endpoint.ts';
import { AgentMetrics } from '../telemetry/metrics.ts';
import { connectionMarks } from '../datapath/marks.ts';
import { allocateQueueBuffers, loadBinding, readQueueCounters, type NativeQueue } from '../native/addon.ts';
import type { Logger } from '../telemetry/log.ts';
import { startStatusServer } from '../telemetry/status-server.ts';
import { closeUnixSocket } from '../telemetry/unix-socket.ts';
import { FlowLog } from '../telemetry/flow-log.ts';
import type { BoundedLogStream } from '../telemetry/log.ts';
import type { AgentConfig } from './config.ts';
import type { BuiltHandler, IdentityStatus } from './handlers.ts';

const { EBUSY, EPERM } = constants.errno;
const QUEUE_RETRY_MS = 1_000;

/** What the agent process runs by: the parsed configuration (runtime/config.ts). */
export type AgentRuntimeConfig = Pick<AgentConfig, 'mode' | 'datapath' | 'telemetry' | 'targets' | 'excluded'>;

export class Agent {
  private queue: NativeQueue | null = null;
  private rules: InstalledRules | null = null;
  private statusServer: Server | null = null;
  private readonly engine: DatapathEngine;
  private readonly buffers;
  private readonly startedAt = new Date();
  private stopping: Promise<void> | null = null;
  private httpEndpoint: Server | null = null;
  private ruleCheck: NodeJS.Timeout | null = null;
  private rulesPresent = false;
  private state: 'starting' | 'waiting-for-queue' | 'running' | 'stopping' = 'starting';
  /** SYNs the kernel let in without a verdict (fail-open), and the audit counter last read. */
  private unjudgedSyns = 0;
  private unjudgedCounterSeen = 0;
  /** Other rules ahead of the hook jumps at the last rule check: they can keep SYNs from us. */
  private rulesAhead = 0;
  private readonly metrics: AgentMetrics;
  private readonly flowLog: FlowLog;
  private readonly peers = new PeerRegistry();
  private whoisServer: NetServer | null = null;
  private peerSweep: NodeJS.Timeout | null = null;

  constructor(
    private readonly config: AgentRuntimeConfig,
    private readonly built: BuiltHandler,
    private readonly log: Logger,
    /** The stream behind `log`, whose backlog the flow log yields to. */
    logStream: BoundedLogStream | null = null,
  ) {
    const options = config.datapath;
    this.flowLog = new FlowLog(config.telemetry.flowLog, log, () => logStream?.pendingBytes ?? 0);
    const flowLog = this.flowLog;
    const peers = this.peers;
    this.buffers = allocateQueueBuffers(options.batchSlots);
    this.metrics = new AgentMetrics({
      queue: () => readQueueCounters(this.buffers.counters),
      kernelQueue: () => {
        const own = readKernelQueues().filter((q) => q.queue >= options.queue && q.queue < options.queue + options.queueCount);
        if (own.length === 0) return null;
        return own.reduce((sum, q) => ({ dropped: sum.dropped + q.dropped, userDropped: sum.userDropped + q.userDropped, waiting: sum.waiting + q.waiting }), { dropped: 0, userDropped: 0, waiting: 0 });
      },
      verdicts: () => this.engine.verdicts.snapshot(),
      caches: () => built.status()?.caches ?? {},
      credentialExpiresAt: () => built.status()?.credentialExpiresAt ?? null,
      policy: () => built.status()?.policy ?? null,
      unjudgedSyns: () => this.unjudgedSyns,
      rulesAhead: () => this.rulesAhead,
      logging: () => ({ flowLog: flowLog.counters, logPendingBytes: logStream?.pendingBytes ?? 0, logDroppedLines: logStream?.droppedLines ?? 0 }),
    });
    const { latency, ruleVerdicts } = this.metrics;
    this.engine = new DatapathEngine(this.buffers, built.handler, {
      marks: connectionMarks(options.markBase),
      mtu: options.mtu,
      onMalformed: options.onMalformed,
      onVerdict: (event) => {
        latency.observe(event.latencyMicroseconds / 1e6);
        if (event.rule !== null) ruleVerdicts.inc({ rule: event.rule, action: event.accepted ? 'accept' : 'drop' });
        flowLog.write(event);
        // Remember who is on the other end of accepted connections, for `synpass whois`.
        if (event.accepted && event.peer !== null && event.direction === 'ingress' && event.stage !== 'ack') {
          const packet = event.packet;
          peers.record(
            `${destinationAddress(packet)}:${packet.destinationPort}`,
            `${sourceAddress(packet)}:${packet.sourcePort}`,
            event.peer,
          );
        }
      },
    });
  }

  /**
   * Probes and the status socket come up first, so a waiting agent can be seen waiting; then the
   * queues (waiting while another process holds one), then the rules.
   */
  async start(): Promise<void> {
    if (this.config.telemetry.metricsAddress !== null) {
      this.httpEndpoint = await startHttpEndpoint(this.config.telemetry.metricsAddress, this.metrics.registry, () => this.readiness());
      this.log.info({ address: this.config.telemetry.metricsAddress }, 'metrics and probes listening');
    }
    this.statusServer = await startStatusServer(this.config.datapath.statusSocket, () => this.status(), {
      flushCaches: () => {
        this.built.flushCaches();
        this.log.info('peer caches flushed');
      },
    });
    const queue = await this.bindQueues();
    if (queue === null) return;
    try {
      this.rules = await installRules(this.ruleOptions(), this.config.datapath.iptables);
    } catch (error) {
      queue.close();
      this.queue = null;
      throw error;
    }
    this.rulesPresent = true;
    this.log.info(
      { backend: this.rules.backend, families: this.rules.families, targets: this.config.targets },
      'rules installed',
    );
    this.ruleCheck = setInterval(() => {
      void this.checkRules();
    }, this.config.datapath.ruleCheckSeconds * 1000);
    this.ruleCheck.unref();
    if (this.config.telemetry.whoisSocket !== null) {
      const binding = loadBinding();
      this.whoisServer = await startWhoisServer(
        this.config.telemetry.whoisSocket,
        {
          registry: this.peers,
          // Node exposes no peer credentials; the accepted socket's descriptor goes to the addon.
          credentialsOf: (socket) => binding.peerCredentials((socket as unknown as { _handle: { fd: number } })._handle.fd),
        },
        this.log,
      );
      this.peerSweep = setInterval(() => {
        this.peers.retain(new Set(liveTcpSockets().map((s) => connectionKey(s.local, s.remote))));
      }, 30_000);
      this.peerSweep.unref();
      this.log.info({ socket: this.config.telemetry.whoisSocket }, 'peer-identity API listening');
    }
    this.state = 'running';
    this.log.info({ mode: this.config.mode, statusSocket: this.config.datapath.statusSocket }, 'agent running');
  }

  /**
   * Binds every queue. A queue another process holds (an agent still shutting down, say) makes
   * the kernel refuse the bind (EPERM, like a missing capability, so the kernel's queue list
   * tells the two apart): the agent stays up and unready and tries again every second, rather
   * than exiting into a restart loop. Returns null when stopped while waiting.
   */
  private async bindQueues(): Promise<NativeQueue | null> {
    const { NfQueue } = loadBinding();
    const queues = Array.from({ length: this.config.datapath.queueCount }, (_, i) => this.config.datapath.queue + i);
    const queue = new NfQueue({
      queues,
      maxLength: this.config.datapath.queueMaxLength,
      failOpen: this.config.datapath.failOpen,
      socketBufferBytes: this.config.datapath.socketBufferBytes,
      input: this.buffers.input,
      meta: this.buffers.meta,
      counters: this.buffers.counters,
      onBatch: this.engine.onBatch,
      onDrained: this.engine.onDrained,
    });
    for (let attempt = 1; ; attempt++) {
      try {
        queue.start();
        break;
      } catch (error) {
        const refused = (error as { errno?: number }).errno;
        const held = (refused === EPERM || refused === EBUSY) && readKernelQueues().some((q) => queues.includes(q.queue));
        if (!held) throw error;
        this.state = 'waiting-for-queue';
        if (attempt === 1) this.log.warn({ queues, err: error }, 'a queue is held by another process; waiting for it');
        await new Promise((resolve) => setTimeout(resolve, QUEUE_RETRY_MS));
        if (this.stopping !== null) return null;
      }
    }
    this.state = 'starting';
    this.queue = queue;
    this.engine.attach(queue);
    this.log.info({ queues, failOpen: this.config.datapath.failOpen }, 'queues bound');
    return queue;
  }

  private ruleOptions(): RuleOptions {
    return {
      queueNumber: this.config.datapath.queue,
      queueCount: this.config.datapath.queueCount,
      failOpen: this.config.datapath.failOpen,
      marks: connectionMarks(this.config.datapath.markBase),
      targetNetworks: this.config.targets,
      excludedNetworks: this.config.excluded,
    };
  }

  /**
   * Someone flushed our chains (a firewall reload, an operator): say so, then put them back.
   * Also reads how many SYNs the kernel let in unjudged since the last check.
   */
  private async checkRules(): Promise<void> {
    if (this.rules === null || this.stopping !== null) return;
    const inspection = await inspectRules(this.rules, this.ruleOptions()).catch(() => null);
    this.rulesPresent = inspection?.present ?? false;
    if (inspection?.present === true) {
      this.countUnjudged(inspection.unjudgedSyns);
      this.noteRulesAhead(inspection.rulesAhead);
      return;
    }
    this.log.error({ backend: this.rules.backend }, 'synpass rules are missing; reinstalling');
    try {
      this.rules = await installRules(this.ruleOptions(), this.rules.backend);
      this.rulesPresent = true;
      this.unjudgedCounterSeen = 0;
      this.log.info('rules reinstalled');
    } catch (error) {
      this.log.error({ err: error }, 'rules could not be reinstalled');
    }
  }

  /**
   * Reported, not fought: moving our jumps back to the top every check would race whichever tool
   * put its rule there (a CNI that prepends its own chains does) and reopen the rules each time.
   */
  private noteRulesAhead(count: number): void {
    if (count > this.rulesAhead) {
      this.log.warn({ rules: count }, 'rules ahead of the synpass jumps in mangle PREROUTING/POSTROUTING: a packet they accept or drop is never judged');
    } else if (count === 0 && this.rulesAhead > 0) {
      this.log.info('the synpass jumps are first in mangle PREROUTING/POSTROUTING again');
    }
    this.rulesAhead = count;
  }

  /** `kernelCount` is the audit rule's counter, which restarts at 0 when the rules are reinstalled. */
  private countUnjudged(kernelCount: number): void {
    const added = kernelCount >= this.unjudgedCounterSeen ? kernelCount - this.unjudgedCounterSeen : kernelCount;
    this.unjudgedCounterSeen = kernelCount;
    if (added === 0) return;
    this.unjudgedSyns += added;
    this.log.warn({ syns: added, total: this.unjudgedSyns, failOpen: this.config.datapath.failOpen }, 'SYNs reached the host without a verdict (queue full or no agent listening)');
  }

  readiness(): Readiness {
    const identity = this.built.status();
    const now = Date.now() / 1000;
    const bound = readKernelQueues().filter((q) => q.queue >= this.config.datapath.queue && q.queue < this.config.datapath.queue + this.config.datapath.queueCount);
    const checks: Readiness['checks'] = {
      rules: {
        ok: this.rules !== null && this.rulesPresent,
        detail: !this.rulesPresent
          ? 'missing'
          : `installed (${this.rules?.backend ?? '-'})${this.rulesAhead > 0 ? `; ${this.rulesAhead} other rule(s) ahead of its jumps` : ''}`,
      },
      queues: {
        ok: this.queue !== null && bound.length === this.config.datapath.queueCount,
        detail: this.state === 'waiting-for-queue' ? 'held by another process; waiting' : `${bound.length} of ${this.config.datapath.queueCount} bound`,
      },
    };
    if (identity !== null) {
      const left = identity.credentialExpiresAt - now;
      checks.credential = { ok: left > this.config.telemetry.credentialMarginSeconds, detail: left > 0 ? `expires in ${Math.round(left)} s` : `expired ${Math.round(-left)} s ago` };
      checks.token = { ok: identity.tokenExpiresAt > now, detail: `expires in ${Math.round(identity.tokenExpiresAt - now)} s` };
      if (identity.policy !== null) checks.policy = { ok: true, detail: `revision ${identity.policy.revision}` };
    }
    return { ready: Object.values(checks).every((check) => check.ok), checks };
  }

  status(): Record<string, unknown> {
    return {
      mode: this.config.mode,
      state: this.state,
      startedAt: this.startedAt.toISOString(),
      rules: this.rules,
      unjudgedSyns: this.unjudgedSyns,
      rulesAhead: this.rulesAhead,
      /** Segments waiting in the kernel queue for their handshake's proof. */
      heldPackets: this.engine.heldNow,
      queue: readQueueCounters(this.buffers.counters),
      verdicts: this.engine.verdicts.snapshot(),
      peersKnown: this.peers.size,
      judging: {
        packets: this.engine.judged,
        microsecondsPerPacket: this.engine.judged === 0 ? 0 : this.engine.busyMicroseconds / this.engine.judged,
      },
      identity: isoIdentityTimes(this.built.status()),
      readiness: this.readiness(),
    };
  }

  async reload(): Promise<void> {
    try {
      await this.built.reload();
      this.log.info('identity reloaded');
    } catch (error) {
      this.log.error({ err: error }, 'reload failed; the previous identity stays in force');
    }
  }

  /** Rules first, then the queue: a packet never meets a rule whose queue has no listener. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.state = 'stopping';
      if (this.ruleCheck) clearInterval(this.ruleCheck);
      if (this.peerSweep) clearInterval(this.peerSweep);
      // Stopped while waiting for a queue: the rules in place belong to whoever holds it.
      if (this.rules !== null) {
        try {
          await removeAllRules();
          this.log.info('rules removed');
        } catch (error) {
          this.log.error({ err: error }, 'rule removal failed; run `synpass agent cleanup`');
        }
      }
      this.queue?.close();
      this.queue = null;
      // Verdict events the addon had not yet reported (it reports once its socket is empty).
      this.engine.onDrained();
      this.built.stop();
      await this.flowLog.close();
      if (this.statusServer) await closeUnixSocket(this.statusServer, this.config.datapath.statusSocket);
      if (this.whoisServer && this.config.telemetry.whoisSocket) await closeUnixSocket(this.whoisServer, this.config.telemetry.whoisSocket);
      const endpoint = this.httpEndpoint;
      if (endpoint) await new Promise<void>((resolve) => endpoint.close(() => { resolve(); }));
      this.log.info({ counters: readQueueCounters(this.buffers.counters) }, 'agent stopped');
    })();
    return this.stopping;
  }
}

/** Status shows every point in time as ISO 8601, as `startedAt`; the handler keeps epoch seconds. */
function isoIdentityTimes(identity: IdentityStatus | null): Record<string, unknown> | null {
  if (identity === null) return null;
  const iso = (seconds: number): string => new Date(seconds * 1000).toISOString();
  return { ...identity, credentialExpiresAt: iso(identity.credentialExpiresAt), tokenExpiresAt: iso(identity.tokenExpiresAt) };
}
