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
 * rules the next of `nat` (null: the call fails; none left: no NAT). With `gated`, an inspection
 * answers only when the test calls `release()`. `change()` is the kernel's word that the ruleset
 * changed; with `refuseChanges` the kernel will not tell.
 */
function scriptedIptables(inspections: (RuleInspection | null)[], nat: (boolean | null)[] = [], watching: { gated?: boolean; refuseChanges?: boolean } = {}) {
  const calls: string[] = [];
  const gates: (() => void)[] = [];
  let changed: (() => void) | null = null;
  const operations: RuleOperations = {
    install: (options, preferred) => {
      calls.push(`install ${preferred}${options.deferPrograms === undefined ? '' : ` deferring by ${options.deferPrograms.backend}`}`);
      return Promise.resolve({ backend: preferred, families: [4] } satisfies InstalledRules);
    },
    inspect: async () => {
      calls.push('inspect');
      if (watching.gated === true) await new Promise<void>((resolve) => gates.push(resolve));
      const next = inspections.shift();
      if (next === null || next === undefined) throw new Error('iptables-save failed');
      return next;
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
    watchChanges: (onChange) => {
      if (watching.refuseChanges === true) throw new Error('subscribe to nftables notifications: Operation not permitted');
      calls.push('watch');
      changed = onChange;
      return {
        close: () => {
          calls.push('unwatch');
          changed = null;
        },
      };
    },
  };
  return {
    operations,
    calls,
    change: () => changed?.(),
    /** Lets the oldest waiting inspection answer. */
    release: () => gates.shift()?.(),
  };
}

/** Resolves once `done` holds, checked every few milliseconds; rejects after two seconds. */
async function until(what: string, done: () => boolean): Promise<void> {
  const deadline = Date.now() + 2_000;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
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

  it('checks when the kernel says the ruleset changed: changes meanwhile join one check, one check at a time', async () => {
    const { log } = capturingLog();
    const present = { present: true, unjudgedSyns: 0, sourceLimitedPackets: 0, rulesAhead: 0 };
    const iptables = scriptedIptables([present, { ...present, present: false }, present], [], { gated: true });
    const watchdog = new RulesWatchdog(OPTIONS, 'nft', log, iptables.operations, 20);
    await watchdog.install();
    watchdog.watch(3_600_000);
    const inspections = () => iptables.calls.filter((call) => call === 'inspect').length;
    // A burst of changes (an iptables-restore notifies per rule) is one check.
    iptables.change();
    iptables.change();
    iptables.change();
    await until('the first check', () => inspections() === 1);
    // Changes while it runs: what it reads may predate them, so one more check follows it.
    iptables.change();
    iptables.change();
    await new Promise((resolve) => setTimeout(resolve, 60));
    assert.equal(inspections(), 1, 'never two checks at once');
    iptables.release();
    await until('the check after it', () => inspections() === 2);
    // That one finds the rules gone and reinstalls them, which the kernel reports as a change.
    iptables.release();
    await until('the reinstall', () => iptables.calls.includes('install nft', 1));
    iptables.change();
    await until('the check after the reinstall', () => inspections() === 3);
    iptables.release();
    await new Promise((resolve) => setTimeout(resolve, 60));
    assert.deepEqual(iptables.calls, ['install nft', 'watch', 'inspect', 'inspect', 'install nft', 'inspect']);
    assert.deepEqual(watchdog.checkState, { intervalSeconds: 3600, onChange: true, onChangeError: null, changes: 6, checks: 3, reinstalls: 1 });
    await watchdog.remove();
    iptables.change();
    await new Promise((resolve) => setTimeout(resolve, 60));
    assert.deepEqual(iptables.calls.slice(6), ['unwatch', 'remove'], 'removed: no check follows a change');
  });

  it('rules that vanish again after every reinstall: checks after a change back off, so the agent does not trade reinstalls with another tool at every notification', async () => {
    const { log, messages } = capturingLog();
    const missing = { present: false, unjudgedSyns: 0, sourceLimitedPackets: 0, rulesAhead: 0 };
    const iptables = scriptedIptables(Array.from({ length: 100 }, () => missing));
    // Like the kernel, which reports the agent's own reinstall as a change (and the other tool
    // reverts it at once).
    const { operations } = iptables;
    const install = operations.install.bind(operations);
    operations.install = async (options, preferred) => {
      const installed = await install(options, preferred);
      iptables.change();
      return installed;
    };
    const watchdog = new RulesWatchdog(OPTIONS, 'nft', log, iptables.operations, 10);
    await watchdog.install();
    watchdog.watch(3_600_000);
    iptables.change();
    await new Promise((resolve) => setTimeout(resolve, 400));
    const checks = watchdog.checkState.checks;
    await watchdog.remove();
    // 10, 10, 20, 40, 80, 160 ms apart: 6 or 7 checks in 400 ms, where a fixed 10 ms gap would make about 40.
    assert.ok(checks >= 4 && checks <= 8, `${String(checks)} checks`);
    assert.ok(messages().includes('synpass rules removed again soon after a reinstall: another tool may be reverting them; checks after a change back off'));
  });

  it('without change notifications it says why and checks on the interval alone', async () => {
    const { log, messages } = capturingLog();
    const present = { present: true, unjudgedSyns: 0, sourceLimitedPackets: 0, rulesAhead: 0 };
    const iptables = scriptedIptables([present, present, present], [], { refuseChanges: true });
    const watchdog = new RulesWatchdog(OPTIONS, 'legacy', log, iptables.operations);
    await watchdog.install();
    watchdog.watch(15);
    await until('two checks on the interval', () => watchdog.checkState.checks >= 2);
    await watchdog.remove();
    const state = watchdog.checkState;
    assert.equal(state.onChange, false);
    assert.equal(state.onChangeError, 'subscribe to nftables notifications: Operation not permitted');
    assert.ok(messages().includes('no ruleset change notifications: rules removed by someone else are found at the next rule check only'));
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
