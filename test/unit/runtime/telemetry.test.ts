import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseKernelQueues } from '../../../agent/src/datapath/kernel-queue.ts';
import { ParsedPacket, parsePacket } from '../../../agent/src/datapath/packet.ts';
import type { VerdictEvent } from '../../../agent/src/datapath/handler.ts';
import { ConfigError, environmentName, loadAgentConfig } from '../../../agent/src/runtime/config.ts';
import { FlowLog } from '../../../agent/src/telemetry/flow-log.ts';
import { createLogger } from '../../../agent/src/telemetry/log.ts';
import { AgentMetrics } from '../../../agent/src/telemetry/metrics.ts';
import { IPV4_SYN } from '../../support/fixtures.ts';
import { scratchDirectory } from '../../support/scratch.ts';

function event(accepted: boolean, reason = 'ok'): VerdictEvent {
  const packet = new ParsedPacket();
  parsePacket(IPV4_SYN, 0, IPV4_SYN.length, packet);
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
    assert.deepEqual(config.targetNetworks, ['10.0.0.0/8', 'fd00::/8']);
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
  it('writes every drop, samples accepts, and rotates the file by size', async () => {
    const directory = scratchDirectory('flow');
    const file = join(directory, 'flows.jsonl');
    let coin = 0;
    const log = new FlowLog({ sink: 'file', file, maxBytes: 8192, maxFiles: 20, sampleAccepted: 0.5 }, createLogger('silent'), () => (coin++ % 2 === 0 ? 0.1 : 0.9));
    for (let i = 0; i < 40; i++) log.write(event(false, 'no-identity'));
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

describe('metrics', () => {
  it('exports verdicts, queue counters, caches, credential expiry and policy revision', async () => {
    const metrics = new AgentMetrics({
      queue: () => ({ received: 9, overruns: 1 }),
      kernelQueue: () => ({ dropped: 3, userDropped: 0, waiting: 0 }),
      verdicts: () => [{ direction: 'ingress', action: 'drop', reason: 'no-identity', count: 4 }],
      caches: () => ({ tokens: { hits: 10, misses: 2 } }),
      credentialExpiresAt: () => Date.now() / 1000 + 100,
      policy: () => ({ revision: 'git:abc', reloadsOk: 2, reloadsFailed: 1 }),
      unjudgedSyns: () => 5,
      rulesAhead: () => 2,
    });
    metrics.ruleVerdicts.inc({ rule: 'api/from-web', action: 'accept' });
    metrics.latency.observe(0.00003);
    const text = await metrics.registry.metrics();
    for (const line of [
      'synpass_verdicts_total{direction="ingress",action="drop",reason="no-identity"} 4',
      'synpass_queue_packets_total{counter="overruns"} 1',
      'synpass_kernel_queue_packets{counter="queue_dropped"} 3',
      'synpass_cache_lookups_total{cache="tokens",result="miss"} 2',
      'synpass_policy_reloads_total{result="failed"} 1',
      'synpass_policy_revision_info{revision="git:abc"} 1',
      'synpass_rule_verdicts_total{rule="api/from-web",action="accept"} 1',
      'synpass_verdict_latency_seconds_count 1',
      'synpass_unjudged_syns_total 5',
      'synpass_rules_ahead 2',
    ]) {
      assert.ok(text.includes(line), `missing: ${line}`);
    }
    assert.match(text, /synpass_credential_expiry_seconds (9\d|100)(\.\d+)?\n/);
    assert.match(text, /synpass_process_resident_memory_bytes/);
  });
});
