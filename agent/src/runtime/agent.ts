// The agent process: serve status and probes, bind the queues, then install the rules (so no
// queued packet ever waits for a listener that is not there yet), and undo both on SIGINT/SIGTERM.
import type { Server } from 'node:http';
import { destinationAddress, sourceAddress } from '../datapath/addresses.ts';
import { PeerRegistry } from '../whois/registry.ts';
import { startWhoisService, type WhoisService } from '../whois/service.ts';
import { DatapathEngine, sumVerdicts, type VerdictCount } from '../datapath/engine.ts';
import { readKernelQueues, type KernelQueueStats } from '../datapath/kernel-queue.ts';
import { startHttpEndpoint, type Readiness } from '../telemetry/http-endpoint.ts';
import { AgentMetrics } from '../telemetry/metrics.ts';
import { connectionMarks, type ConnectionMarks } from '../datapath/marks.ts';
import { deferMark } from '../datapath/rules.ts';
import { allocateQueueBuffers, loadBinding, readQueueCounters, type NativeQueue } from '../native/addon.ts';
import type { Logger } from '../telemetry/log.ts';
import { startStatusServer } from '../telemetry/status-server.ts';
import { closeUnixSocket } from '../telemetry/unix-socket.ts';
import { FLOW_LOG_MAX_AGGREGATES, FlowLog, kernelFlowRecord } from '../telemetry/flow-log.ts';
import type { TableSize } from '../datapath/handler.ts';
import type { BoundedLogStream } from '../telemetry/log.ts';
import type { AgentConfig } from './config.ts';
import type { BuiltHandler, IdentityStatus } from './handlers.ts';
import { bindWhenFree, queuesBound } from './queue-binder.ts';
import { chooseKernelFastPath, type FastPathChoice } from './kernel-fast-path.ts';
import type { KernelFastPath } from '../kernel/fast-path.ts';
import type { NotrackBy } from '../datapath/iptables.ts';
import { KernelDropLedger } from '../kernel/drop-ledger.ts';
import { verdictOf } from '../kernel/layouts.ts';
import { RulesWatchdog } from './rules-watchdog.ts';
import { takeSavedTables, writeSavedTables } from './saved-tables-file.ts';
import { ReadinessTaint } from './readiness-taint.ts';
import { ServerResetter } from './server-resetter.ts';
import { kubernetesAccess, type KubernetesAccess } from '../identity/kubernetes/api.ts';

/** What the agent process runs by: the parsed configuration (runtime/config.ts). */
export type AgentRuntimeConfig = Pick<AgentConfig, 'mode' | 'datapath' | 'telemetry' | 'targets' | 'excluded' | 'replayWindowSeconds' | 'workloads' | 'handshake' | 'kubernetes'>;

/** status `serviceSyns.reason` where the rules judge SYNs after the DNAT, for uids' connects too. */
const JUDGED_AFTER_DNAT = 'judged after the DNAT, by the bpf match in mangle POSTROUTING';

/** "address:port" as whois and the registry write it (IPv6 without brackets). */
function splitEndpoint(endpoint: string): [string, number] {
  const colon = endpoint.lastIndexOf(':');
  return [endpoint.slice(0, colon), Number(endpoint.slice(colon + 1))];
}

export class Agent {
  private queue: NativeQueue | null = null;
  private readonly rules: RulesWatchdog;
  private statusServer: Server | null = null;
  private readonly engine: DatapathEngine;
  private readonly serverResets: ServerResetter;
  private readonly buffers;
  private readonly startedAt = new Date();
  private stopping: Promise<void> | null = null;
  private httpEndpoint: Server | null = null;
  private state: 'starting' | 'waiting-for-queue' | 'running' | 'stopping' = 'starting';
  private readonly metrics: AgentMetrics;
  private readonly flowLog: FlowLog;
  private readonly peers = new PeerRegistry();
  private whois: WhoisService | null = null;
  private fastPath: FastPathChoice = { path: null, reason: 'not started', cgroup: null };
  private fastPathTimer: NodeJS.Timeout | null = null;
  /** Whether the kernel fast path's connections skip conntrack, and why. */
  private conntrack: { skipped: boolean; reason: string } = { skipped: false, reason: 'not started' };
  /** On a node: whether its pods' SYNs to service addresses are judged after the DNAT, in the kernel where it can (deferServiceSyns). */
  private serviceSyns: { deferred: boolean; reason: string } = { deferred: false, reason: 'not started' };
  /** SYNs the queue accepted, by direction: beside the kernel's own, the fast path's share. */
  private readonly queuedSyns = { ingress: 0, egress: 0 };
  /** Aborted at stop: a rehearsal still running ends after its current handshake. */
  private readonly rehearsal = new AbortController();
  /** Kubernetes only: taking the readiness taint off this node once running. */
  private readinessTaint: ReadinessTaint | null = null;
  /** The first-contact rehearsal, for status: `off` in pass-through mode or with none configured. */
  private rehearsalStatus: { state: 'off' | 'running' | 'done' | 'failed'; handshakes?: number; milliseconds?: number; error?: string } = { state: 'off' };
  /** The mark bits of the rules, the engine's verdicts and the kernel programs (datapath.markBase). */
  private readonly marks: ConnectionMarks;

  constructor(
    private readonly config: AgentRuntimeConfig,
    private readonly built: BuiltHandler,
    private readonly log: Logger,
    /** The stream behind `log`, whose backlog the flow log yields to. */
    logStream: BoundedLogStream | null = null,
  ) {
    const options = config.datapath;
    this.marks = connectionMarks(options.markBase);
    this.rules = new RulesWatchdog(
      {
        queueNumber: options.queue,
        queueCount: options.queueCount,
        failOpen: options.failOpen,
        queueRatePerSource: options.queueRatePerSource,
        queueMaxLength: options.queueMaxLength,
        marks: this.marks,
        targetNetworks: config.targets,
        excludedNetworks: config.excluded,
        routedWorkloads: config.kubernetes !== null,
      },
      options.iptables,
      log,
    );
    this.flowLog = new FlowLog(config.telemetry.flowLog, log, () => logStream?.pendingBytes ?? 0);
    const flowLog = this.flowLog;
    const peers = this.peers;
    this.buffers = allocateQueueBuffers(options.batchSlots);
    this.metrics = new AgentMetrics({
      queue: () => readQueueCounters(this.buffers.counters),
      kernelQueue: () => this.kernelQueueTotals(),
      verdicts: () => this.verdicts(),
      caches: () => built.status()?.caches ?? {},
      credentialExpiresAt: () => built.status()?.credentialExpiresAt ?? null,
      credentialRenewal: () => built.status()?.renewal ?? null,
      policy: () => built.status()?.policy ?? null,
      unjudgedSyns: () => this.rules.unjudgedSyns,
      rulesAhead: () => this.rules.rulesAhead,
      rulesReinstalled: () => this.rules.checkState.reinstalls,
      logging: () => ({ flowLog: flowLog.counters, logPendingBytes: logStream?.pendingBytes ?? 0, logDroppedLines: logStream?.droppedLines ?? 0 }),
      tables: () => this.tables(),
      kernelFastPath: () => ({ running: this.fastPath.path !== null, counters: this.fastPath.path?.counters() ?? {}, listenersOnQueue: this.fastPath.path?.listenersOnQueue.length ?? 0 }),
      serverResets: () => this.serverResets.counts,
    });
    const { latencyOf, ruleVerdicts } = this.metrics;
    this.serverResets = new ServerResetter((packet) => {
      loadBinding().sendRawPacket(packet);
    }, this.log);
    this.engine = new DatapathEngine(this.buffers, built.handler, {
      marks: this.marks,
      mtu: options.mtu,
      onMalformed: options.onMalformed,
      onServerReset: this.serverResets.reset,
      onVerdict: (event) => {
        latencyOf[event.direction][event.stage].observe(event.latencyMicroseconds / 1e6);
        if (event.rule !== null) ruleVerdicts.inc({ rule: event.rule, action: event.accepted ? 'accept' : 'drop' });
        flowLog.write(event);
        if (event.accepted && event.stage === 'syn') this.queuedSyns[event.direction] += 1;
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
      await this.rules.install();
    } catch (error) {
      queue.close();
      this.queue = null;
      throw error;
    }
    this.rules.watch(this.config.datapath.ruleCheckSeconds * 1000);
    await this.startKernelFastPath();
    if (this.config.telemetry.whoisSocket !== null) this.whois = await startWhoisService(this.config.telemetry.whoisSocket, this.peers, this.log);
    this.state = 'running';
    this.log.info({ mode: this.config.mode, statusSocket: this.config.datapath.statusSocket }, 'agent running');
    this.removeReadinessTaint();
    this.rehearseFirstContacts();
  }

  /** In the background: pods that wait for the taint to go start once it has. */
  private removeReadinessTaint(): void {
    const kubernetes = this.config.kubernetes;
    if (kubernetes?.readinessTaint == null) return;
    const log = this.log.child({ node: kubernetes.nodeName, taint: kubernetes.readinessTaint });
    let access: KubernetesAccess;
    try {
      access = kubernetesAccess(kubernetes.apiServer);
    } catch (error) {
      // The agent runs on: only pods waiting for the taint to go wait on.
      log.error({ err: error }, 'readiness taint not removed: no access to the Kubernetes API');
      return;
    }
    const taint = new ReadinessTaint({
      access,
      nodeName: kubernetes.nodeName,
      key: kubernetes.readinessTaint,
      onError: (error) => {
        log.warn({ err: error }, 'readiness taint not removed from the node; retrying (the agent needs get and patch on nodes)');
      },
    });
    this.readinessTaint = taint;
    void taint.remove().then(() => {
      const { state } = taint.status;
      if (state !== 'removing') log.info({ state }, state === 'removed' ? 'readiness taint removed from the node: pods may start' : 'the node has no readiness taint');
    });
  }

  /** In the background, between real packets (handshake/rehearsal.ts); a failure is logged and changes nothing else. */
  private rehearseFirstContacts(): void {
    const count = this.config.handshake.rehearsals;
    const rehearse = this.built.rehearse;
    if (rehearse === null || count === 0) return;
    this.rehearsalStatus = { state: 'running' };
    rehearse(count, this.rehearsal.signal).then(
      (done) => {
        const milliseconds = Math.round(done.milliseconds);
        this.rehearsalStatus = { state: 'done', handshakes: done.handshakes, milliseconds };
        this.log.info({ handshakes: done.handshakes, milliseconds }, 'first contacts rehearsed');
      },
      (error: unknown) => {
        this.rehearsalStatus = { state: 'failed', error: (error as Error).message };
        this.log.error({ err: error }, 'first-contact rehearsal failed: real first contacts run colder code, nothing else changes');
      },
    );
  }

  /** After the rules: the marks the kernel programs set mean something only once the rules are in. */
  private async startKernelFastPath(): Promise<void> {
    const acceptSample = this.flowLog.logsAccepts ? this.config.telemetry.flowLog.sampleAccepted : 0;
    // The handler's tables and what the previous run saved go into the maps before the programs
    // are attached: programs a previous run kept judge until then, so no fast SYN meets an empty table.
    const choice = chooseKernelFastPath(this.config, this.marks, acceptSample, (loaded) => {
      this.built.useKernelPath?.(loaded);
      this.restoreKernelTables();
    });
    this.fastPath = choice;
    const path = choice.path;
    if (path === null) {
      this.built.useKernelPath?.(null);
      this.restoreKernelTables(false);
      const level = this.config.datapath.kernelFastPath === 'off' ? 'info' : 'warn';
      this.log[level]({ kernelFastPath: this.config.datapath.kernelFastPath, reason: choice.reason }, 'kernel fast path not running: every handshake takes the queue');
      const byCgroup = this.config.workloads.filter((workload) => workload.cgroups.length > 0).map((workload) => workload.name);
      // Only the kernel's sock_ops program sees which cgroup connects: say who loses that.
      if (byCgroup.length > 0) this.log.warn({ workloads: byCgroup }, 'workloads[].cgroups need the kernel fast path: these workloads are known by their uids only');
      return;
    }
    this.peers.fallback = (local, remote) => path.peerOf(...splitEndpoint(local), ...splitEndpoint(remote))?.identity;
    const settleDrops = this.logKernelVerdicts(path);
    this.fastPathTimer = setInterval(() => {
      path.tick();
      settleDrops();
      const added = path.followInterfaces();
      if (added.length > 0) this.log.info({ interfaces: added }, 'kernel fast path attached to new interfaces');
      const listeners = path.takeNewListenersOnQueue();
      if (listeners.length > 0) {
        this.log.warn(
          { ports: listeners, cgroup: choice.cgroup },
          'listeners not on the kernel fast path: they listen outside its cgroup, or began listening before its programs were attached and the listener sweep could not run; their known pairs stay on the queue until they listen again (restart the service)',
        );
      }
    }, 1000);
    this.fastPathTimer.unref();
    const sweep = path.sweepListeners();
    const translating = await this.rules.translating();
    this.conntrack = await this.skipConntrack(path, translating);
    this.serviceSyns = await this.deferServiceSyns(path, translating);
    if (!translating) this.watchForNat(path);
    await sweep;
    const { attached, skipped } = path.interfaces;
    this.log.info(
      {
        kernelFastPath: this.config.datapath.kernelFastPath,
        cgroup: choice.cgroup,
        interfaces: attached,
        skipped,
        pinDir: this.config.datapath.fastPathPinDir,
        conntrack: this.conntrack,
        serviceSyns: this.serviceSyns,
        tookOverKept: path.tookOver,
        listenerSweep: path.listenerSweep,
      },
      'kernel fast path running',
    );
  }

  /**
   * The kernel's verdict events into the flow log, through a ledger that makes its drop counts add
   * up (kernel/drop-ledger.ts). Returns what to call once a second: it writes the drops no report
   * covered.
   */
  private logKernelVerdicts(path: KernelFastPath): () => void {
    const flowLog = this.flowLog;
    const ledger = new KernelDropLedger(path.counters());
    path.onEvents((event, peer) => {
      const record = kernelFlowRecord(event, peer);
      if (record === null) return;
      // A drop the ledger already summarised is not written again.
      const unwritten = record.verdict === 'drop' ? ledger.reported(event.counter, 1 + event.folded) : 1;
      if (unwritten > 0) flowLog.writeKernel(record, event.source, unwritten - 1);
    });
    return () => {
      for (const [counter, drops] of ledger.settle(path.counters())) flowLog.writeKernelTail(verdictOf(counter)!.reason, drops);
    };
  }

  /**
   * Leaves the connections the kernel judges out of conntrack (`datapath.fastPathConntrack`),
   * unless this namespace translates addresses (`auto`): a connection without conntrack entry is
   * not NATed. Why it does or does not, for the log and status.
   */
  private async skipConntrack(path: KernelFastPath, translating: boolean): Promise<{ skipped: boolean; reason: string }> {
    const mode = this.config.datapath.fastPathConntrack;
    if (mode === 'keep') return { skipped: false, reason: 'kept (datapath.fastPathConntrack)' };
    if (this.rules.installed === null) return { skipped: false, reason: 'kept: no rules installed' };
    if (mode === 'auto' && translating) return { skipped: false, reason: 'kept: this network namespace has NAT rules (auto)' };
    let by: NotrackBy | null;
    try {
      by = await this.rules.skipConntrack();
    } catch (error) {
      this.log.warn({ err: error }, 'the notrack rules failed: the kernel fast path keeps conntrack');
      return { skipped: false, reason: `kept: ${(error as Error).message}` };
    }
    if (by === null) return { skipped: false, reason: 'kept: no rules installed' };
    path.skipConntrack(this.marks.untracked);
    return { skipped: true, reason: `skipped (${mode}), by ${by === 'nftables' ? 'nftables' : 'the iptables raw table'}` };
  }

  /**
   * SYNs this host DNATs (a service address, a node port) are judged after the DNAT (rules.ts,
   * buildDeferRuleset): the kernel sends one fast whose sender holds a client entry for the server
   * the DNAT chose, and on a node it lets a pair of its pods by. Without the rules (no bpf match in
   * iptables or the kernel) such SYNs stay on the queue, and a node's pods' are judged before the
   * DNAT. Why it does or does not, for the log and status.
   */
  private async deferServiceSyns(path: KernelFastPath, translating: boolean): Promise<{ deferred: boolean; reason: string }> {
    try {
      if (!(await this.rules.deferServiceSyns(path.deferPrograms))) return { deferred: false, reason: 'no rules installed' };
    } catch (error) {
      this.log.warn({ err: error }, 'the rules that judge SYNs after the DNAT failed: a SYN to a service address stays on the queue');
      return { deferred: false, reason: `on the queue: ${(error as Error).message}` };
    }
    if (this.config.kubernetes !== null) path.deferServiceSyns(deferMark(this.marks));
    path.nameUidOwnersAfterNat(translating);
    if (translating) return { deferred: true, reason: JUDGED_AFTER_DNAT };
    return { deferred: true, reason: `${JUDGED_AFTER_DNAT}; no NAT rules at start: a uid's connection through a later one goes fast from the rule check that finds it` };
  }

  /**
   * NAT rules can come after the agent (a container runtime or kube-proxy that starts later). From
   * the rule check that finds them (datapath.ruleCheckSeconds), connections the kernel judges keep
   * conntrack where `auto` skipped it, since a NAT rule translates only tracked connections, and
   * uids' connects name themselves for the rules after the DNAT. Until that check, a fast
   * connection to a port a new rule translates is not translated.
   */
  private watchForNat(path: KernelFastPath): void {
    const skipping = this.conntrack.skipped && this.config.datapath.fastPathConntrack === 'auto';
    if (!skipping && !this.serviceSyns.deferred) return;
    this.rules.whenNatAppears(() => {
      // A check that began before the agent stopped: the programs are closed, or kept as they were.
      if (this.fastPath.path !== path) return;
      if (skipping) {
        path.keepConntrackFromNow();
        this.conntrack = { skipped: false, reason: `kept from ${new Date().toISOString()}: this network namespace has NAT rules now (auto); connections judged before stay out of conntrack` };
      }
      if (this.serviceSyns.deferred) {
        path.nameUidOwnersAfterNat(true);
        this.serviceSyns = { deferred: true, reason: JUDGED_AFTER_DNAT };
      }
      this.log.info({ conntrack: this.conntrack, serviceSyns: this.serviceSyns }, 'NAT rules found after start: the kernel fast path follows them from now on');
    });
  }

  /**
   * What peers proved to the previous run's kernel, and what this agent's workloads proved to
   * servers, back in this one's (datapath.fastPathStateFile): peers' next fast SYNs are accepted
   * rather than left to fall back after a timeout, and local workloads go on sending fast SYNs.
   * Without the kernel fast path, only the previous run's previous key (after a rotation): SYN
   * proofs peers made to it are honoured again until it ends.
   */
  private restoreKernelTables(kernel = true): void {
    const file = this.config.datapath.fastPathStateFile;
    const kept = this.built.keptKernelTables;
    if (file === null || kept === null) return;
    try {
      const saved = takeSavedTables(file);
      if (saved === null) return;
      const restored = kept.restore(saved);
      if (kernel) this.log.info({ file, ...restored }, 'kernel fast path: the previous run\'s tables restored');
      else this.log.info({ file, previousKey: kept.holdsPreviousKey() }, 'the previous run\'s state restored (its previous key, if still honoured)');
    } catch (error) {
      if (kernel) this.log.warn({ err: error, file }, 'kernel fast path: the saved tables were not restored; clients fall back once, local workloads take a first contact');
      else this.log.warn({ err: error, file }, 'the saved state was not restored: a SYN proved to the previous key is dropped once and retransmitted signed');
    }
  }

  /** The kernel's tables for the next run; without the kernel fast path (null), only a previous key still honoured, if any. */
  private saveKernelTables(path: KernelFastPath | null): void {
    const file = this.config.datapath.fastPathStateFile;
    const kept = this.built.keptKernelTables;
    if (file === null || kept === null || (path === null && !kept.holdsPreviousKey())) return;
    try {
      const servers = path?.serversToSave() ?? [];
      const clients = path?.clientsToSave() ?? [];
      const retiring = path?.serversToSave('previous') ?? [];
      writeSavedTables(file, kept.encode(servers, clients, retiring));
      if (path === null) this.log.info({ file }, 'previous key saved for the next run');
      else this.log.info({ file, servers: servers.length, clients: clients.length, retiring: retiring.length }, 'kernel fast path: tables saved for the next run');
    } catch (error) {
      if (path === null) this.log.warn({ err: error, file }, 'the previous key was not saved: after a restart a SYN proved to it is dropped once and retransmitted signed');
      else this.log.warn({ err: error, file }, 'kernel fast path: the tables were not saved; after a restart clients fall back once, local workloads take a first contact');
    }
  }

  /**
   * Detached before the rules go: fast SYNs then meet the queue, which drops what it cannot prove.
   * Or kept (`datapath.fastPathKeepSeconds`): the kernel goes on judging known pairs and cloaking
   * alone until the next start replaces it, or the time is up.
   */
  private stopKernelFastPath(): void {
    const path = this.fastPath.path;
    if (path === null) {
      this.saveKernelTables(null);
      return;
    }
    if (this.fastPathTimer) clearInterval(this.fastPathTimer);
    this.saveKernelTables(path);
    this.built.useKernelPath?.(null);
    this.peers.fallback = null;
    this.fastPath = { path: null, reason: 'stopped', cgroup: this.fastPath.cgroup };
    const keepSeconds = this.config.datapath.fastPathKeepSeconds;
    if (keepSeconds > 0) {
      path.keep(keepSeconds, !this.config.datapath.failOpen);
      this.log.info({ seconds: keepSeconds, pinDir: this.config.datapath.fastPathPinDir }, 'kernel fast path kept for the next start');
      return;
    }
    const detached = path.close();
    this.log.info(detached, 'kernel fast path detached');
  }

  /** The kernel fast path for status: whether it runs and why, where, its counters and tables. */
  private kernelFastPathStatus(): Record<string, unknown> {
    const { path, reason, cgroup } = this.fastPath;
    if (path === null) return { running: false, mode: this.config.datapath.kernelFastPath, reason };
    const counters = path.counters();
    return {
      running: true,
      mode: this.config.datapath.kernelFastPath,
      reason,
      cgroup,
      pinDir: this.config.datapath.fastPathPinDir,
      interfaces: path.interfaces.attached,
      skipped: path.interfaces.skipped,
      counters,
      shares: {
        // On a node, SYNs between its pods let by as known pairs are incoming SYNs the kernel judged too.
        incoming: fastShare((counters.synAccepted ?? 0) + (counters.podSynAccepted ?? 0), this.queuedSyns.ingress),
        outgoing: fastShare(counters.synSent ?? 0, this.queuedSyns.egress),
      },
      refusedEntries: path.refused,
      cloakedPorts: path.cloakedPorts,
      listenersOnQueue: path.listenersOnQueue,
      listenerSweep: path.listenerSweep,
      policyWalk: { running: path.rejudging, last: path.lastRejudging },
      backlog: { entries: path.backlogSize, error: path.backlogError },
      conntrack: this.conntrack,
      serviceSyns: this.serviceSyns,
    };
  }

  /** Binds every queue, waiting while another process holds one; null when stopped while waiting. */
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
    const bound = await bindWhenFree({
      start: () => { queue.start(); },
      heldElsewhere: () => queuesBound(queues),
      onWaiting: (error) => {
        this.state = 'waiting-for-queue';
        this.log.warn({ queues, err: error }, 'a queue is held by another process; waiting for it');
      },
      cancelled: () => this.stopping !== null,
    });
    if (!bound) return null;
    this.state = 'starting';
    this.queue = queue;
    this.engine.attach(queue);
    this.log.info({ queues, failOpen: this.config.datapath.failOpen }, 'queues bound');
    return queue;
  }

  /** The kernel's view of this agent's queues (bound, waiting, dropped). */
  private ownKernelQueues(): KernelQueueStats[] {
    const { queue, queueCount } = this.config.datapath;
    return readKernelQueues().filter((q) => q.queue >= queue && q.queue < queue + queueCount);
  }

  /** The kernel side of the agent's queues, summed: dropped when full, dropped for user space, waiting. */
  private kernelQueueTotals(): { dropped: number; userDropped: number; waiting: number } | null {
    const own = this.ownKernelQueues();
    if (own.length === 0) return null;
    return own.reduce((sum, q) => ({ dropped: sum.dropped + q.dropped, userDropped: sum.userDropped + q.userDropped, waiting: sum.waiting + q.waiting }), { dropped: 0, userDropped: 0, waiting: 0 });
  }

  /** Verdicts of the queue, of the kernel fast path, and the SYNs the kernel dropped above their source's rate. */
  private verdicts(): VerdictCount[] {
    // The queue's, the kernel's and the rules' counts of one verdict make one row.
    const rows = [...this.engine.verdicts.snapshot(), ...(this.fastPath.path?.verdicts() ?? [])];
    const limited = this.rules.sourceLimitedPackets;
    return sumVerdicts(limited === 0 ? rows : [...rows, { direction: 'ingress', action: 'drop', reason: 'source-rate-limited', count: limited }]);
  }

  /** Every bounded table: the handshake's and the verifier's, whois peers, flow-log aggregates. */
  private tables(): Record<string, TableSize> {
    return {
      ...this.built.tables(),
      ...this.fastPath.path?.tables(),
      'whois-peers': { entries: this.peers.size, capacity: this.peers.limit },
      'flow-log-aggregates': { entries: this.flowLog.counters.aggregates, capacity: FLOW_LOG_MAX_AGGREGATES },
    };
  }

  readiness(): Readiness {
    const identity = this.built.status();
    const now = Date.now() / 1000;
    const bound = this.ownKernelQueues();
    const checks: Readiness['checks'] = {
      rules: {
        ok: this.rules.installed !== null && this.rules.present,
        detail: !this.rules.present
          ? 'missing'
          : `installed (${this.rules.installed?.backend ?? '-'})${this.rules.rulesAhead > 0 ? `; ${this.rules.rulesAhead} other rule(s) ahead of its jumps` : ''}`,
      },
      queues: {
        ok: this.queue !== null && bound.length === this.config.datapath.queueCount,
        detail: this.state === 'waiting-for-queue' ? 'held by another process; waiting' : `${bound.length} of ${this.config.datapath.queueCount} bound`,
      },
    };
    if (identity !== null) {
      const left = identity.credentialExpiresAt - now;
      const failing = identity.renewal?.failingSince ?? null;
      // Why the credential is not being renewed, so an operator reads the cause, not just the symptom.
      const renewal = failing === null ? '' : `; renewal failing since ${new Date(failing * 1000).toISOString()}: ${identity.renewal?.lastError ?? ''}`;
      checks.credential = {
        ok: left > this.config.telemetry.credentialMarginSeconds,
        detail: `${left > 0 ? `expires in ${Math.round(left)} s` : `expired ${Math.round(-left)} s ago`}${renewal}`,
      };
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
      rules: this.rules.installed,
      unjudgedSyns: this.rules.unjudgedSyns,
      rulesAhead: this.rules.rulesAhead,
      ruleChecks: this.rules.checkState,
      /** Segments waiting in the kernel queue for their handshake's proof. */
      heldPackets: this.engine.heldNow,
      /** Resets sent to local servers whose SYN-ACK was refused (and sends the kernel refused). */
      serverResets: this.serverResets.counts,
      queue: readQueueCounters(this.buffers.counters),
      kernelQueue: this.kernelQueueTotals(),
      verdicts: this.verdicts(),
      kernelFastPath: this.kernelFastPathStatus(),
      rehearsal: this.rehearsalStatus,
      ...(this.config.kubernetes === null ? {} : { kubernetes: { node: this.config.kubernetes.nodeName, readinessTaint: this.readinessTaint?.status ?? null } }),
      peersKnown: this.peers.size,
      tables: this.tables(),
      judging: {
        packets: this.engine.judged,
        microsecondsPerPacket: this.engine.judged === 0 ? 0 : this.engine.busyMicroseconds / this.engine.judged,
        byStage: this.engine.judgingByStage(),
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
      this.rehearsal.abort();
      this.readinessTaint?.stop();
      this.stopKernelFastPath();
      await this.rules.remove();
      this.queue?.close();
      this.queue = null;
      // Verdict events the addon had not yet reported (it reports once its socket is empty).
      this.engine.onDrained();
      this.built.stop();
      await this.flowLog.close();
      if (this.statusServer) await closeUnixSocket(this.statusServer, this.config.datapath.statusSocket);
      await this.whois?.close();
      const endpoint = this.httpEndpoint;
      if (endpoint) await new Promise<void>((resolve) => endpoint.close(() => { resolve(); }));
      this.log.info({ counters: readQueueCounters(this.buffers.counters) }, 'agent stopped');
    })();
    return this.stopping;
  }
}

/** Accepted SYNs the kernel judged against those the queue did, since the agent started. */
function fastShare(kernel: number, queue: number): { kernel: number; queue: number; kernelShare: number | null } {
  return { kernel, queue, kernelShare: kernel + queue === 0 ? null : Math.round((kernel / (kernel + queue)) * 1000) / 1000 };
}

/** Status shows every point in time as ISO 8601, as `startedAt`; the handler keeps epoch seconds. */
function isoIdentityTimes(identity: IdentityStatus | null): Record<string, unknown> | null {
  if (identity === null) return null;
  const iso = (seconds: number): string => new Date(seconds * 1000).toISOString();
  const nullableIso = (seconds: number | null): string | null => (seconds === null ? null : iso(seconds));
  const renewal = identity.renewal === null
    ? null
    : { ...identity.renewal, lastRenewedAt: nullableIso(identity.renewal.lastRenewedAt), nextAttemptAt: nullableIso(identity.renewal.nextAttemptAt), failingSince: nullableIso(identity.renewal.failingSince) };
  return { ...identity, credentialExpiresAt: iso(identity.credentialExpiresAt), tokenExpiresAt: iso(identity.tokenExpiresAt), previousKeyUntil: nullableIso(identity.previousKeyUntil), renewal };
}
