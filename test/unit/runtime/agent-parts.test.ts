// The agent's runtime pieces on their own: the rules watchdog against fake iptables calls, and
// the queue binder against a kernel that refuses a held queue.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { constants } from 'node:os';
import type { InstalledRules, RuleInspection } from '../../../agent/src/datapath/iptables.ts';
import { connectionMarks } from '../../../agent/src/datapath/marks.ts';
import type { RuleOptions } from '../../../agent/src/datapath/rules.ts';
import { bindWhenFree } from '../../../agent/src/runtime/queue-binder.ts';
import { RulesWatchdog, type RuleOperations } from '../../../agent/src/runtime/rules-watchdog.ts';
import { createAgentLog } from '../../../agent/src/telemetry/log.ts';

/** A logger whose lines are kept, parsed, for the test to read. */
function capturingLog() {
  const lines: Record<string, unknown>[] = [];
  const { log } = createAgentLog('info', {
    write: (data) => {
      lines.push(JSON.parse(data) as Record<string, unknown>);
      return true;
    },
    on: () => undefined,
    flushSync: () => undefined,
  });
  return { log, messages: () => lines.map((line) => line.msg) };
}

const OPTIONS: RuleOptions = { queueNumber: 3170, queueCount: 1, failOpen: true, queueRatePerSource: 0, queueMaxLength: 4096, marks: connectionMarks(0x100000), targetNetworks: [], excludedNetworks: [], routedWorkloads: false };

/**
 * iptables as a script: each inspection returns the next scripted answer, and each look for NAT
 * rules the next of `nat` (null: the call fails; none left: no NAT).
 */
function scriptedIptables(inspections: (RuleInspection | null)[], nat: (boolean | null)[] = []) {
  const calls: string[] = [];
  const operations: RuleOperations = {
    install: (options, preferred) => {
      calls.push(`install ${preferred}${options.deferPrograms === undefined ? '' : ` deferring by ${options.deferPrograms.backend}`}`);
      return Promise.resolve({ backend: preferred, families: [4] } satisfies InstalledRules);
    },
    inspect: () => {
      calls.push('inspect');
      const next = inspections.shift();
      return next === null || next === undefined ? Promise.reject(new Error('iptables-save failed')) : Promise.resolve(next);
    },
    installNotrack: () => {
      calls.push('notrack');
      return Promise.resolve('nftables' as const);
    },
    installDefer: (_installed, _options, programs) => {
      calls.push(`defer by ${programs.backend}`);
      return programs.backend.startsWith('/refused') ? Promise.reject(new Error('iptables-restore: Couldn\'t load match `bpf\'')) : Promise.resolve();
    },
    natInUse: () => {
      calls.push('nat?');
      const next = nat.shift();
      return next === null ? Promise.reject(new Error('iptables-save -t nat failed')) : Promise.resolve(next ?? false);
    },
    removeAll: () => {
      calls.push('remove');
      return Promise.resolve(1);
    },
  };
  return { operations, calls };
}

describe('rules watchdog', () => {
  it('counts unjudged SYNs across checks and a reinstall that restarts the kernel counter', async () => {
    const { log, messages } = capturingLog();
    const { operations, calls } = scriptedIptables([
      { present: true, unjudgedSyns: 3, sourceLimitedPackets: 10, rulesAhead: 0 },
      { present: true, unjudgedSyns: 5, sourceLimitedPackets: 25, rulesAhead: 0 },
      { present: false, unjudgedSyns: 0, sourceLimitedPackets: 0, rulesAhead: 0 },
      { present: true, unjudgedSyns: 1, sourceLimitedPackets: 4, rulesAhead: 0 },
    ]);
    const watchdog = new RulesWatchdog(OPTIONS, 'nft', log, operations);
    await watchdog.install();
    for (let i = 0; i < 4; i++) await watchdog.check();
    assert.equal(watchdog.unjudgedSyns, 3 + 2 + 1, 'the counter restarted at 0 with the reinstall');
    assert.equal(watchdog.sourceLimitedPackets, 10 + 15 + 4);
    assert.deepEqual(calls, ['install nft', 'inspect', 'inspect', 'inspect', 'install nft', 'inspect']);
    assert.ok(messages().includes('synpass rules are missing; reinstalling'));
    assert.ok(messages().includes('rules reinstalled'));
    assert.equal(watchdog.present, true);
  });

  it('the rules that judge pods\' SYNs after the DNAT go in after the ruleset, and with every reinstall', async () => {
    const { log } = capturingLog();
    const { operations, calls } = scriptedIptables([{ present: false, unjudgedSyns: 0, sourceLimitedPackets: 0, rulesAhead: 0 }]);
    const watchdog = new RulesWatchdog(OPTIONS, 'nft', log, operations);
    const pins = { backend: '/sys/fs/bpf/synpass/service_backend', translated: '/sys/fs/bpf/synpass/translated_syn' };
    assert.equal(await watchdog.deferServiceSyns(pins), false, 'no rules yet: nothing to add to');
    await watchdog.install();
    assert.equal(await watchdog.deferServiceSyns(pins), true);
    await watchdog.check();
    assert.deepEqual(calls, ['install nft', 'defer by /sys/fs/bpf/synpass/service_backend', 'inspect', 'install nft deferring by /sys/fs/bpf/synpass/service_backend']);
    // Where iptables or the kernel has no bpf match, the ruleset is put back as it was, without them.
    const refusing = scriptedIptables([]);
    const without = new RulesWatchdog(OPTIONS, 'nft', log, refusing.operations);
    await without.install();
    await assert.rejects(without.deferServiceSyns({ backend: '/refused/service_backend', translated: '/refused/translated_syn' }), /bpf/);
    assert.deepEqual(refusing.calls, ['install nft', 'defer by /refused/service_backend', 'install nft']);
  });

  it('looks for NAT rules at each check while someone waits for them, and tells once; a failed look counts as NAT rules found', async () => {
    const { log } = capturingLog();
    const present = { present: true, unjudgedSyns: 0, sourceLimitedPackets: 0, rulesAhead: 0 };
    const { operations, calls } = scriptedIptables([present, present, present, { ...present, present: false }, present], [false, false, true]);
    const watchdog = new RulesWatchdog(OPTIONS, 'nft', log, operations);
    assert.equal(await watchdog.translating(), false, 'no rules installed: nothing looked at');
    await watchdog.install();
    await watchdog.check();
    assert.deepEqual(calls, ['install nft', 'inspect'], 'nobody waits: no look');
    let found = 0;
    watchdog.whenNatAppears(() => found++);
    await watchdog.check();
    await watchdog.check();
    assert.equal(found, 0);
    // Found at the check after a reinstall too; then never looked for again.
    await watchdog.check();
    await watchdog.check();
    assert.equal(found, 1);
    assert.deepEqual(calls.slice(2), ['inspect', 'nat?', 'inspect', 'nat?', 'inspect', 'install nft', 'nat?', 'inspect']);
    const failing = scriptedIptables([present], [null]);
    const unsure = new RulesWatchdog(OPTIONS, 'nft', log, failing.operations);
    await unsure.install();
    unsure.whenNatAppears(() => found++);
    await unsure.check();
    assert.equal(found, 2, 'a look that failed counts as NAT rules');
    // Removed while it looked: it tells nobody.
    const stopping = scriptedIptables([present], [true]);
    const removed = new RulesWatchdog(OPTIONS, 'nft', log, stopping.operations);
    await removed.install();
    removed.whenNatAppears(() => found++);
    const checking = removed.check();
    await removed.remove();
    await checking;
    assert.equal(found, 2);
  });

  it('reports rules ahead of its jumps once, and when they are gone', async () => {
    const { log, messages } = capturingLog();
    const { operations } = scriptedIptables([
      { present: true, unjudgedSyns: 0, sourceLimitedPackets: 0, rulesAhead: 1 },
      { present: true, unjudgedSyns: 0, sourceLimitedPackets: 0, rulesAhead: 1 },
      { present: true, unjudgedSyns: 0, sourceLimitedPackets: 0, rulesAhead: 0 },
    ]);
    const watchdog = new RulesWatchdog(OPTIONS, 'legacy', log, operations);
    await watchdog.install();
    await watchdog.check();
    assert.equal(watchdog.rulesAhead, 1);
    await watchdog.check();
    await watchdog.check();
    const ahead = messages().filter((m) => String(m).startsWith('rules ahead of the synpass jumps'));
    assert.equal(ahead.length, 1, 'said once, not at every check');
    assert.ok(messages().includes('the synpass jumps are first in mangle PREROUTING/POSTROUTING again'));
    assert.equal(watchdog.rulesAhead, 0);
  });

  it('a failed inspection counts as missing rules; removal stops the checks and removes only what it installed', async () => {
    const { log } = capturingLog();
    const { operations, calls } = scriptedIptables([null]);
    const never = new RulesWatchdog(OPTIONS, 'nft', log, operations);
    await never.remove();
    assert.deepEqual(calls, [], 'rules it never installed (a queue held elsewhere) are not its to remove');
    const watchdog = new RulesWatchdog(OPTIONS, 'nft', log, operations);
    await watchdog.install();
    await watchdog.check();
    await watchdog.remove();
    await watchdog.check();
    assert.deepEqual(calls, ['install nft', 'inspect', 'install nft', 'remove']);
  });
});

describe('queue binder', () => {
  const refusal = (errno: number) => Object.assign(new Error('bind refused'), { errno });

  it('waits while another process holds the queue, then binds', async () => {
    let attempts = 0;
    const waited: unknown[] = [];
    const bound = await bindWhenFree({
      start: () => {
        attempts += 1;
        if (attempts < 3) throw refusal(constants.errno.EPERM);
      },
      heldElsewhere: () => true,
      onWaiting: (error) => waited.push(error),
      cancelled: () => false,
      retryMs: 1,
    });
    assert.equal(bound, true);
    assert.equal(attempts, 3);
    assert.equal(waited.length, 1, 'told once');
  });

  it('a refusal for a queue nobody holds is an error (a missing capability), not a wait', async () => {
    await assert.rejects(
      bindWhenFree({ start: () => { throw refusal(constants.errno.EPERM); }, heldElsewhere: () => false, onWaiting: () => undefined, cancelled: () => false, retryMs: 1 }),
      /bind refused/,
    );
    await assert.rejects(
      bindWhenFree({ start: () => { throw refusal(constants.errno.ENOENT); }, heldElsewhere: () => true, onWaiting: () => undefined, cancelled: () => false, retryMs: 1 }),
      /bind refused/,
    );
  });

  it('gives up when the agent stops while waiting', async () => {
    let stopping = false;
    const bound = await bindWhenFree({
      start: () => {
        stopping = true;
        throw refusal(constants.errno.EBUSY);
      },
      heldElsewhere: () => true,
      onWaiting: () => undefined,
      cancelled: () => stopping,
      retryMs: 1,
    });
    assert.equal(bound, false);
  });
});
