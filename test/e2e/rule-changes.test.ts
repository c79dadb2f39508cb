// The agent hears of ruleset changes from the kernel (nftables notifications): rules another
// tool removes are back at once, and NAT rules that appear are followed at once, where the rule
// check on its interval (an hour here) would leave the services open, or the NAT unapplied, until
// then. Runs in both modes of the suite; the NAT case is the kernel fast path's.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startIdentityLab, type IdentityLab } from '../../scripts/lib/identity-lab.ts';
import { isRoot, kernelByDefault, waitUntil, type AgentHandle, type Lab } from '../../scripts/lib/lab.ts';
import { kernelFastPathOf } from '../../scripts/lib/kernel-counters.ts';
import type { RuleCheckStatus } from '../../agent/src/runtime/rules-watchdog.ts';

const PORT = 8080;
/** Longer than the whole file runs: every check it sees was asked for by a change. */
const RULE_CHECK_SECONDS = 3600;
const CHECKED_HOURLY = { SYNPASS_DATAPATH_RULE_CHECK_SECONDS: String(RULE_CHECK_SECONDS) };

describe('ruleset changes', { skip: !isRoot() && 'needs root for network namespaces' }, () => {
  let fixture: IdentityLab;
  let lab: Lab;
  let api: AgentHandle;

  before(async () => {
    fixture = await startIdentityLab({ prefix: 'rc', net: 22, api: { env: CHECKED_HOURLY }, web: { env: CHECKED_HOURLY }, server: { port: PORT, kind: 'http', seconds: 600 } });
    ({ lab, api } = fixture);
  });

  after(async () => {
    await fixture.down();
  });

  async function ruleChecks(agent: AgentHandle): Promise<RuleCheckStatus> {
    return ((await agent.status()) as unknown as { ruleChecks: RuleCheckStatus }).ruleChecks;
  }

  /** Removes api's rules with `remove`; how long the agent took to find them gone, and to put them back (ms). */
  async function reinstalledAfter(remove: () => void): Promise<{ found: number; reinstalled: number }> {
    const mark = api.process.lines.length;
    const before = await ruleChecks(api);
    const removedAt = Date.now();
    remove();
    const missing = await api.process.waitFor((l) => l.msg === 'synpass rules are missing; reinstalling' && api.process.lines.indexOf(l) >= mark, 5_000);
    const reinstalled = await api.process.waitFor((l) => l.msg === 'rules reinstalled' && api.process.lines.indexOf(l) >= mark, 5_000);
    const after = await ruleChecks(api);
    assert.ok(after.changes > before.changes, 'the kernel reported the change');
    assert.ok(after.checks > before.checks);
    return { found: Date.parse(String(missing.time)) - removedAt, reinstalled: Date.parse(String(reinstalled.time)) - removedAt };
  }

  async function cloakedAndServing(): Promise<void> {
    assert.equal(await lab.peerOnce('outsider', ['echo', lab.address('api'), String(PORT), 'x'], 2_500).catch(() => null), null, 'cloaked from the outsider again');
    assert.equal((await lab.peerOnce('web', ['http', lab.address('api'), String(PORT)])).status, 200);
  }

  it('says it checks on changes as well as on its interval', async () => {
    for (const agent of [api, fixture.web]) {
      const checks = await ruleChecks(agent);
      assert.deepEqual([checks.intervalSeconds, checks.onChange, checks.onChangeError], [RULE_CHECK_SECONDS, true, null]);
    }
    assert.equal((await lab.peerOnce('web', ['http', lab.address('api'), String(PORT)])).status, 200);
  });

  it('rules another tool flushes are back at once, not at the next rule check', async (t) => {
    const took = await reinstalledAfter(() => lab.exec('api', ['iptables-nft', '-t', 'mangle', '-F']));
    t.diagnostic(`after the flush: found gone at ${String(took.found)} ms, reinstalled at ${String(took.reinstalled)} ms`);
    await cloakedAndServing();
  });

  it('an IPv6-only flush is found too (until 2026-12-08 only the IPv4 rules were checked)', async (t) => {
    assert.deepEqual(((await api.status()) as unknown as { rules: { families: number[] } }).rules.families, [4, 6]);
    const took = await reinstalledAfter(() => lab.exec('api', ['ip6tables-nft', '-t', 'mangle', '-F']));
    t.diagnostic(`after the IPv6 flush: found gone at ${String(took.found)} ms, reinstalled at ${String(took.reinstalled)} ms`);
    assert.match(lab.exec('api', ['ip6tables-nft-save', '-t', 'mangle']), /-j SYNPASS-/);
    assert.equal(await lab.peerOnce('outsider', ['echo', lab.address('api', 6), String(PORT), 'x'], 2_500).catch(() => null), null, 'cloaked over IPv6 again');
    assert.equal((await lab.peerOnce('web', ['http', lab.address('api', 6), String(PORT)])).status, 200, 'over IPv6');
  });

  it('a firewall reload that restores a mangle table without them: back at once', async (t) => {
    const table = '*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n';
    const took = await reinstalledAfter(() => lab.exec('api', ['sh', '-c', `printf '${table.replaceAll('\n', '\\n')}' | iptables-nft-restore`]));
    t.diagnostic(`after the reload: found gone at ${String(took.found)} ms, reinstalled at ${String(took.reinstalled)} ms`);
    assert.equal(lab.exec('api', ['iptables-nft-save', '-t', 'mangle']).includes('-j SYNPASS-'), true, 'the jumps are back');
    await cloakedAndServing();
  });

  it('NAT rules that appear are followed at once: the kernel fast path keeps conntrack from then on', { skip: !kernelByDefault() && 'the kernel fast path is off in this run' }, async () => {
    const conntrack = async (): Promise<string> => (kernelFastPathOf(await api.status()) as unknown as { conntrack: { reason: string } }).conntrack.reason;
    assert.equal(await conntrack(), 'skipped (auto), by nftables');
    const redirect = ['-t', 'nat', '-A', 'PREROUTING', '-p', 'tcp', '--dport', '7000', '-j', 'REDIRECT', '--to-ports', String(PORT)];
    lab.exec('api', ['iptables-nft', ...redirect]);
    try {
      await waitUntil('api follows the NAT rule', async () => (await conntrack()).startsWith('kept from '), 5_000);
      assert.equal((await lab.peerOnce('web', ['http', lab.address('api'), '7000'])).status, 200, 'through the redirect');
    } finally {
      lab.exec('api', ['iptables-nft', ...redirect.map((word) => (word === '-A' ? '-D' : word))]);
    }
  });
});
