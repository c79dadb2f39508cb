// The agent process: bind the queues, then install the rules (so no queued packet ever waits
// for a listener that is not there yet), serve status, and undo both on SIGINT/SIGTERM.
import type { Server } from 'node:http';
import { DatapathEngine, type MalformedPolicy } from '../datapath/engine.ts';
import { installRules, removeAllRules, type Backend, type InstalledRules } from '../datapath/iptables.ts';
import { connectionMarks } from '../datapath/marks.ts';
import { allocateQueueBuffers, loadBinding, readQueueCounters, type NativeQueue } from '../datapath/nfqueue.ts';
import type { Logger } from '../telemetry/log.ts';
import { startStatusServer, stopStatusServer } from '../telemetry/status-server.ts';
import { logVerdict, type BuiltHandler } from './handlers.ts';

export interface AgentOptions {
  queueNumber: number;
  queueCount: number;
  queueMaxLength: number;
  failOpen: boolean;
  markBase: number;
  mtu: number;
  onMalformed: MalformedPolicy;
  targetNetworks: string[];
  excludedNetworks: string[];
  statusSocket: string;
  batchSlots: number;
  iptablesBackend: Backend;
}

export const DEFAULT_AGENT_OPTIONS: AgentOptions = {
  queueNumber: 3170,
  queueCount: 1,
  queueMaxLength: 4096,
  failOpen: false,
  markBase: 0x00100000,
  mtu: 1500,
  onMalformed: 'drop',
  targetNetworks: [],
  excludedNetworks: [],
  statusSocket: '/run/synpass/agent.sock',
  batchSlots: 32,
  iptablesBackend: 'nft',
};

export class Agent {
  private queue: NativeQueue | null = null;
  private rules: InstalledRules | null = null;
  private statusServer: Server | null = null;
  private readonly engine: DatapathEngine;
  private readonly buffers;
  private readonly startedAt = new Date();
  private stopping: Promise<void> | null = null;

  constructor(
    private readonly options: AgentOptions,
    private readonly built: BuiltHandler,
    private readonly log: Logger,
    private readonly mode: string,
  ) {
    this.buffers = allocateQueueBuffers(options.batchSlots);
    this.engine = new DatapathEngine(this.buffers, built.handler, {
      marks: connectionMarks(options.markBase),
      mtu: options.mtu,
      onMalformed: options.onMalformed,
      onVerdict: (event) => {
        logVerdict(log, event);
      },
    });
  }

  async start(): Promise<void> {
    const { NfQueue } = loadBinding();
    const queues = Array.from({ length: this.options.queueCount }, (_, i) => this.options.queueNumber + i);
    const queue = new NfQueue({
      queues,
      maxLength: this.options.queueMaxLength,
      failOpen: this.options.failOpen,
      socketBufferBytes: 8 * 1024 * 1024,
      input: this.buffers.input,
      meta: this.buffers.meta,
      counters: this.buffers.counters,
      onBatch: this.engine.onBatch,
    });
    queue.start();
    this.queue = queue;
    this.engine.attach(queue);
    this.log.info({ queues, failOpen: this.options.failOpen }, 'queues bound');
    try {
      this.rules = await installRules({
        queueNumber: this.options.queueNumber,
        queueCount: this.options.queueCount,
        failOpen: this.options.failOpen,
        marks: connectionMarks(this.options.markBase),
        targetNetworks: this.options.targetNetworks,
        excludedNetworks: this.options.excludedNetworks,
      }, this.options.iptablesBackend);
    } catch (error) {
      queue.close();
      this.queue = null;
      throw error;
    }
    this.log.info(
      { backend: this.rules.backend, families: this.rules.families, targets: this.options.targetNetworks },
      'rules installed',
    );
    this.statusServer = await startStatusServer(this.options.statusSocket, () => this.status(), {
      flushCaches: () => {
        this.built.flushCaches();
        this.log.info('peer caches flushed');
      },
    });
    this.log.info({ mode: this.mode, statusSocket: this.options.statusSocket }, 'agent running');
  }

  status(): Record<string, unknown> {
    return {
      mode: this.mode,
      startedAt: this.startedAt.toISOString(),
      rules: this.rules,
      queue: readQueueCounters(this.buffers.counters),
      verdicts: this.engine.verdicts.snapshot(),
      judging: {
        packets: this.engine.judged,
        microsecondsPerPacket: this.engine.judged === 0 ? 0 : this.engine.busyMicroseconds / this.engine.judged,
      },
      identity: this.built.status(),
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
      try {
        await removeAllRules();
        this.log.info('rules removed');
      } catch (error) {
        this.log.error({ err: error }, 'rule removal failed; run `synpass agent cleanup`');
      }
      this.queue?.close();
      this.queue = null;
      this.built.stop();
      if (this.statusServer) await stopStatusServer(this.statusServer, this.options.statusSocket);
      this.log.info({ counters: readQueueCounters(this.buffers.counters) }, 'agent stopped');
    })();
    return this.stopping;
  }
}
