import { EventEmitter } from 'node:events';
import type { Server } from 'node:http';
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseKernelQueues } from '../../../agent/src/datapath/kernel-queue.ts';
import { ParsedPacket, parsePacket } from '../../../agent/src/datapath/packet.ts';
import type { VerdictEvent } from '../../../agent/src/datapath/handler.ts';
import { ConfigError, environmentName, loadAgentConfig } from '../../../agent/src/runtime/config.ts';
import { ANY_SOURCE, FLOW_LOG_MAX_AGGREGATES, FLOW_LOG_MAX_PENDING_BYTES, FlowLog, kernelFlowRecord } from '../../../agent/src/telemetry/flow-log.ts';
import { BoundedLogStream, createAgentLog, createLogger, type AsyncDestination } from '../../../agent/src/telemetry/log.ts';
import { AgentMetrics } from '../../../agent/src/telemetry/metrics.ts';
import { startStatusServer } from '../../../agent/src/telemetry/status-server.ts';
import { AgentNotRunningError, waitUntilRunning } from '../../../agent/src/telemetry/status-client.ts';
import { IPV4_SYN } from '../../../scripts/lib/fixtures.ts';
import { scratchDirectory } from '../../../scripts/lib/scratch.ts';
import type { Reason } from '../../../agent/src/datapath/reasons.ts';

/** A verdict on IPV4_SYN (from 10.213.5.1), or on the same SYN from `source` (an IPv4 address). */
function event(accepted: boolean, reason: Reason = 'ok', source?: string): VerdictEvent {
  const bytes = Uint8Array.from(IPV4_SYN);
  if (source !== undefined) bytes.set(source.split('.').map(Number), 12);
  const packet = new ParsedPacket();
  parsePacket(bytes, 0, bytes.length, packet);
  return { direction: 'ingress', stage: 'syn', accepted, reason, packet, peer: null, rule: 'api/from-web', revision: 'git:abc', wouldDrop: null, local: { 'synpass.subject': 'spiffe://d/api' }, latencyMicroseconds: 42.4 };
}

describe('configuration from the environment', () => {
  it('maps every field to SYNPASS_<PATH> and applies it over the file', () => {
    assert.equal(environmentName('identity.tokenTtlMinutes'), 'SYNPASS_IDENTITY_TOKEN_TTL_MINUTES');
    assert.equal(environmentName('telemetry.flowLog.sampleAccepted'), 'SYNPASS_TELEMETRY_FLOW_LOG_SAMPLE_ACCEPTED');
    const config = loadAgentConfig(null, {
      SYNPASS_DATAPATH_QUEUE: '77',
      SYNPASS_DATAPATH_FAIL_OPEN: 'true',
      SYNPASS_TARGETS: '10.0.0.0/8, fd00::/8',
      SYNPASS_TELEMETRY_METRICS_ADDRESS: '127.0.0.1:9464',
      SYNPASS_TELEMETRY_FLOW_LOG_SAMPLE_ACCEPTED: '0.25',
    });
    assert.equal(config.mode, 'pass-through');
    assert.equal(config.datapath.queue, 77);
    assert.equal(config.datapath.failOpen, true);
    assert.deepEqual(config.targets, ['10.0.0.0/8', 'fd00::/8']);
    assert.equal(config.telemetry.metricsAddress, '127.0.0.1:9464');
    assert.equal(config.telemetry.flowLog.sampleAccepted, 0.25);
  });

  it('a bad override names the variable, the field and the expected type', () => {
    const expectError = (environment: NodeJS.ProcessEnv, field: RegExp, expected: RegExp) => {
      assert.throws(
        () => loadAgentConfig(null, environment),
        (error: unknown) => error instanceof ConfigError && field.test(error.field) && expected.test(error.expected),
      );
    };
    expectError({ SYNPASS_DATAPATH_QUEUE: 'many' }, /^SYNPASS_DATAPATH_QUEUE \(datapath\.queue\)$/, /integer/);
    expectError({ SYNPASS_DATAPATH_FAIL_OPEN: 'yes' }, /datapath\.failOpen/, /true or false/);
    expectError({ SYNPASS_DATAPATH_QUEUE: '70000' }, /^datapath\.queue$/, /0 to 65535/);
    expectError({ SYNPASS_TELEMETRY_METRICS_ADDRESS: 'nowhere' }, /telemetry\.metricsAddress/, /host:port/);
    expectError({ SYNPASS_TELEMETRY_FLOW_LOG_SINK: 'file' }, /telemetry\.flowLog\.file/, /path/);
    expectError({ SYNPASS_DATAPATH_MARK_BASE: '3' }, /datapath\.markBase/, /single bit/);
  });
});

describe('kernel queue statistics', () => {
  it('parses /proc/net/netfilter/nfnetlink_queue', () => {
    const stats = parseKernelQueues('3170  12345     2 2 65535     7     1      981  1\n 3171 0 0 2 65535 0 0 0 1\n');
    assert.deepEqual(stats[0], { queue: 3170, portId: 12345, waiting: 2, dropped: 7, userDropped: 1 });
    assert.equal(stats.length, 2);
    assert.deepEqual(parseKernelQueues('garbage\n'), []);
  });
});

describe('flow log', () => {
  it('writes every drop of distinct sources, samples accepts, and rotates the file by size', async () => {
    const directory = scratchDirectory('flow');
    const file = join(directory, 'flows.jsonl');
    let coin = 0;
    const log = new FlowLog({ sink: 'file', file, maxBytes: 8192, maxFiles: 20, sampleAccepted: 0.5 }, createLogger('silent'), () => 0, () => (coin++ % 2 === 0 ? 0.1 : 0.9));
    log.write(event(false, 'no-identity'));
    for (let i = 1; i < 40; i++) log.write(event(false, 'no-identity', `10.213.6.${i}`));
    for (let i = 0; i < 40; i++) log.write(event(true));
    await log.close();
    // rotating-file-stream keeps its own history in flows.jsonl.txt.
    const files = readdirSync(directory).filter((name) => !name.endsWith('.txt')).sort();
    assert.ok(files.length >= 3, `rotated files: ${files.join(', ')}`);
    assert.ok(files.includes('flows.jsonl') && files.includes('flows.jsonl.1'));
    const lines = files.flatMap((name) => readFileSync(join(directory, name), 'utf8').split('\n').filter(Boolean)).map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.equal(lines.filter((l) => l.verdict === 'drop').length, 40);
    assert.equal(lines.filter((l) => l.verdict === 'accept').length, 20);
    const first = lines[0]!;
    assert.equal(first.source, '10.213.5.1:25750');
    assert.equal(first.destination, '10.213.5.2:7000');
    assert.equal(first.rule, 'api/from-web');
    assert.equal(first.policyRevision, 'git:abc');
    assert.equal(first.latencyMicroseconds, 42);
    assert.equal((first.local as { subject: string }).subject, 'spiffe://d/api');
  });
});

/** A log destination that keeps what it is given until `complete` reports it written. */
class SlowDestination extends EventEmitter implements AsyncDestination {
  readonly lines: string[] = [];
  write(data: string): boolean {
    this.lines.push(data);
    return true;
  }
  complete(): void {
    for (const line of this.lines.splice(0)) this.emit('write', Buffer.byteLength(line));
  }
  flushSync(): void {
    this.complete();
  }
}

/** Parsed JSON lines of a SlowDestination, with pino's `msg`. */
function records(destination: SlowDestination): Record<string, unknown>[] {
  return destination.lines.map((line) => JSON.parse(line) as Record<string, unknown>);
}

describe('bounded logging under a flood', () => {
  it('the log stream drops and counts lines past its bound, and takes lines again once they are written', () => {
    const destination = new SlowDestination();
    const stream = new BoundedLogStream(destination, 1000);
    const line = `${'x'.repeat(99)}\n`;
    for (let i = 0; i < 15; i++) stream.write(line);
    assert.equal(stream.pendingBytes, 1000);
    assert.equal(stream.droppedLines, 5);
    destination.complete();
    assert.equal(stream.pendingBytes, 0);
    assert.equal(stream.write(line), true);
    assert.equal(stream.droppedLines, 5);
  });

  it('a flood from one source is one full line and one "N more drops" line per second', async () => {
    const destination = new SlowDestination();
    const { log } = createAgentLog('info', destination);
    let clock = Date.parse('2026-12-03T12:00:00.000Z');
    const flows = new FlowLog({ sink: 'stdout', file: null, maxBytes: 1 << 20, maxFiles: 1, sampleAccepted: 1 }, log, () => 0, Math.random, () => clock);
    for (let i = 0; i < 100_000; i++) flows.write(event(false, 'no-identity'));
    flows.write(event(false, 'replayed-syn'));
    clock += 1000;
    await flows.close();
    const lines = records(destination);
    assert.deepEqual(
      lines.map((line) => [line.event, line.reason, line.count ?? null]),
      [
        ['handshake', 'no-identity', null],
        ['handshake', 'replayed-syn', null],
        ['drops', 'no-identity', 99_999],
      ],
    );
    assert.equal(lines[2]!.msg, '99999 more drops from 10.213.5.1 for reason no-identity');
    assert.equal(lines[2]!.until, '2026-12-03T12:00:01.000Z');
    assert.equal(flows.counters.aggregated, 99_999);
  });

  it('kernel drops: the reported one is a line, the ones the kernel folded join the "N more drops" line', async () => {
    const destination = new SlowDestination();
    let clock = Date.parse('2026-12-03T12:00:00.000Z');
    const flows = new FlowLog({ sink: 'stdout', file: null, maxBytes: 1 << 20, maxFiles: 1, sampleAccepted: 1 }, createAgentLog('info', destination).log, () => 0, Math.random, () => clock);
    const drop = kernelFlowRecord({ counter: 'synNoIdentity', fastId: 0, source: '10.213.5.3', destination: '10.213.5.2', sourcePort: 1, destinationPort: 80, folded: 0, owner: null }, null)!;
    flows.writeKernel(drop, '10.213.5.3', 0);
    flows.writeKernel(drop, '10.213.5.3', 41_999);
    clock += 1000;
    await flows.close();
    assert.deepEqual(
      records(destination).map((line) => [line.event, line.reason, line.path ?? null, line.count ?? null]),
      [
        ['handshake', 'no-identity', 'kernel', null],
        ['drops', 'no-identity', null, 42_000],
      ],
    );
  });

  it('spoofed sources past the cap share one line per reason', async () => {
    const destination = new SlowDestination();
    const flows = new FlowLog({ sink: 'stdout', file: null, maxBytes: 1 << 20, maxFiles: 1, sampleAccepted: 1 }, createAgentLog('info', destination).log);
    const sources = FLOW_LOG_MAX_AGGREGATES + 3000;
    for (let i = 0; i < sources; i++) flows.write(event(false, 'no-identity', `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`));
    await flows.close();
    const lines = records(destination);
    assert.equal(lines.filter((line) => line.event === 'handshake').length, FLOW_LOG_MAX_AGGREGATES);
    assert.deepEqual(lines.filter((line) => line.event === 'drops').map((line) => [line.source, line.count]), [[ANY_SOURCE, 3000]]);
  });

  it('yields to a sink that is behind: flow records are dropped and counted, an error still gets through', () => {
    const destination = new SlowDestination();
    const { log, stream } = createAgentLog('info', destination);
    const flows = new FlowLog({ sink: 'stdout', file: null, maxBytes: 1 << 20, maxFiles: 1, sampleAccepted: 1 }, log, () => stream.pendingBytes);
    let written = 0;
    for (let i = 0; stream.pendingBytes < FLOW_LOG_MAX_PENDING_BYTES; i++, written++) flows.write(event(true, 'ok', `10.1.${(i >> 8) & 255}.${i & 255}`));
    for (let i = 0; i < 500; i++) flows.write(event(true));
    assert.equal(flows.counters.dropped.backlog, 500);
    assert.equal(destination.lines.length, written);
    log.error({ directory: '/etc/synpass/policy' }, 'policy set refused');
    assert.equal(records(destination).at(-1)!.msg, 'policy set refused');
    assert.ok(stream.pendingBytes <= stream.maxPendingBytes);
  });
});

describe('metrics', () => {
  it('exports verdicts, queue counters, caches, server resets, credential expiry and policy revision', async () => {
    const metrics = new AgentMetrics({
      queue: () => ({ received: 9, overruns: 1 }),
      kernelQueue: () => ({ dropped: 3, userDropped: 0, waiting: 0 }),
      verdicts: () => [{ direction: 'ingress', action: 'drop', reason: 'no-identity', count: 4 }],
      caches: () => ({ tokens: { hits: 10, misses: 2 } }),
      credentialExpiresAt: () => Date.now() / 1000 + 100,
      credentialRenewal: () => ({ renewals: 4, failures: 2, failingSince: Date.now() / 1000 - 30 }),
      policy: () => ({ revision: 'git:abc', reloadsOk: 2, reloadsFailed: 1 }),
      unjudgedSyns: () => 5,
      rulesAhead: () => 2,
      rulesReinstalled: () => 3,
      logging: () => ({ flowLog: { dropped: { backlog: 7 }, aggregated: 1234, aggregates: 3 }, logPendingBytes: 4096, logDroppedLines: 11 }),
      tables: () => ({ flows: { entries: 12, capacity: 65_536 } }),
      kernelFastPath: () => ({ running: true, counters: { synAccepted: 6, synFallback: 1 }, listenersOnQueue: 2 }),
      serverResets: () => ({ sent: 8, failed: 1 }),
    });
    metrics.ruleVerdicts.inc({ rule: 'api/from-web', action: 'accept' });
    metrics.latencyOf.ingress.syn.observe(0.0005);
    metrics.latencyOf.egress['syn-ack'].observe(0.00003);
    const text = await metrics.registry.metrics();
    for (const line of [
      'synpass_verdicts_total{direction="ingress",action="drop",reason="no-identity"} 4',
      'synpass_queue_packets_total{counter="overruns"} 1',
      'synpass_kernel_fast_path_running 1',
      'synpass_kernel_fast_path_listeners_on_queue 2',
      'synpass_kernel_fast_path_total{counter="synAccepted"} 6',
      'synpass_kernel_fast_path_total{counter="synFallback"} 1',
      'synpass_kernel_queue_packets{counter="queue_dropped"} 3',
      'synpass_cache_lookups_total{cache="tokens",result="miss"} 2',
      'synpass_policy_reloads_total{result="failed"} 1',
      'synpass_policy_revision_info{revision="git:abc"} 1',
      'synpass_rule_verdicts_total{rule="api/from-web",action="accept"} 1',
      'synpass_verdict_latency_seconds_count{direction="ingress",stage="syn"} 1',
      'synpass_verdict_latency_seconds_bucket{le="0.00025",direction="ingress",stage="syn"} 0',
      'synpass_verdict_latency_seconds_bucket{le="0.0005",direction="ingress",stage="syn"} 1',
      'synpass_verdict_latency_seconds_count{direction="egress",stage="syn-ack"} 1',
      'synpass_unjudged_syns_total 5',
      'synpass_server_resets_total{result="sent"} 8',
      'synpass_server_resets_total{result="failed"} 1',
      'synpass_rules_ahead 2',
      'synpass_rules_reinstalled_total 3',
      'synpass_flow_log_dropped_total{reason="backlog"} 7',
      'synpass_flow_log_aggregated_total 1234',
      'synpass_log_dropped_lines_total 11',
      'synpass_log_pending_bytes 4096',
      'synpass_table_entries{table="flows"} 12',
      'synpass_table_capacity{table="flows"} 65536',
    ]) {
      assert.ok(text.includes(line), `missing: ${line}`);
    }
    assert.match(text, /synpass_credential_expiry_seconds (9\d|100)(\.\d+)?\n/);
    assert.match(text, /synpass_credential_renewals_total\{result="ok"\} 4\n/);
    assert.match(text, /synpass_credential_renewals_total\{result="failed"\} 2\n/);
    assert.match(text, /synpass_credential_renewal_failing_seconds (29|30|31)(\.\d+)?\n/);
    assert.match(text, /synpass_process_resident_memory_bytes/);
  });
});

describe('waiting for the agent', () => {
  it('waits through no socket and a starting agent until it runs; gives up in time naming the state it saw last', async () => {
    const socket = join(scratchDirectory('wait'), 'agent.sock');
    let state = 'starting';
    const servers: Server[] = [];
    // The agent's status socket appears a moment after the wait began, as at a unit's start.
    const serving = setTimeout(() => {
      void startStatusServer(socket, () => ({ state }), { flushCaches: () => undefined }).then((server) => {
        servers.push(server);
        setTimeout(() => (state = 'waiting-for-queue'), 100);
        setTimeout(() => (state = 'running'), 250);
      });
    }, 150);
    try {
      const waited = await waitUntilRunning(socket, 5_000, 20);
      assert.ok(waited >= 350 && waited < 2_000, `waited ${waited} ms`);
      state = 'stopping';
      const started = Date.now();
      await assert.rejects(waitUntilRunning(socket, 300, 20), (error: Error) => {
        assert.ok(error instanceof AgentNotRunningError);
        assert.match(error.message, /^no agent running at .*agent\.sock within 0\.3 s: state stopping$/);
        return true;
      });
      assert.ok(Date.now() - started < 1_500);
      await assert.rejects(waitUntilRunning(`${socket}.absent`, 100, 20), /within 0\.1 s: no agent answers \(.*ENOENT/);
    } finally {
      clearTimeout(serving);
      for (const server of servers) server.close();
    }
  });
});
