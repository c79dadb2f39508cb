import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connectionMarks } from '../../../agent/src/datapath/marks.ts';
import { buildDeferRuleset, buildNativeNotrack, buildNotrackRuleset, buildRemoval, buildRuleset, deferMark, emptiedBuiltinChains, nftNatRules, rulesAheadOfHooks, rulesPresent, sourceBurst, sourceLimitedCount, unjudgedSynCount, type RuleOptions } from '../../../agent/src/datapath/rules.ts';

const options: RuleOptions = {
  queueNumber: 3170,
  queueCount: 1,
  failOpen: false,
  queueRatePerSource: 0,
  queueMaxLength: 4096,
  marks: connectionMarks(0x100000),
  targetNetworks: ['10.0.0.0/8', 'fd00::/8'],
  excludedNetworks: ['10.9.0.0/16'],
  routedWorkloads: false,
};

describe('buildRuleset', () => {
  const v4 = buildRuleset(4, options);
  const lines = v4.split('\n');

  it('hooks its chains first in PREROUTING and POSTROUTING of mangle; the fast path\'s untracked connections jump only for a SYN or SYN-ACK the kernel did not mark judged', () => {
    assert.equal(lines[0], '*mangle');
    assert.deepEqual(
      lines.filter((l) => l.startsWith('-I ')),
      [
        '-I PREROUTING 1 -p tcp -m mark ! --mark 0x2000000/0x2000000 -j SYNPASS-IN',
        '-I PREROUTING 2 -p tcp -m tcp --tcp-flags SYN SYN -m mark --mark 0x2000000/0x2800000 -j SYNPASS-IN',
        '-I POSTROUTING 1 -p tcp -m mark ! --mark 0x2000000/0x2000000 -j SYNPASS-OUT',
      ],
    );
    assert.equal(lines.at(-2), 'COMMIT');
  });

  it('returns a released connection\'s packets first thing, unless they are SYNs, carry a marker or come back from a verdict', () => {
    const chain = (name: string) => lines.filter((l) => l.startsWith(`-A ${name} `));
    assert.deepEqual(chain('SYNPASS-IN'), [
      '-A SYNPASS-IN -p tcp -m mark ! --mark 0x100000/0x100000 -m connmark --mark 0x400000/0x400000 -m tcp ! --tcp-flags SYN,ACK,FIN,RST SYN -m tcp ! --tcp-option 253 -j RETURN',
      '-A SYNPASS-IN -m mark ! --mark 0x100000/0x100000 -j SYNPASS-IN-Q',
      '-A SYNPASS-IN -m mark --mark 0x100000/0x100000 -j SYNPASS-MARK',
    ]);
    assert.deepEqual(chain('SYNPASS-OUT'), [
      '-A SYNPASS-OUT -m mark ! --mark 0x100000/0x100000 -m connmark --mark 0x400000/0x400000 -j RETURN',
      '-A SYNPASS-OUT -m mark ! --mark 0x100000/0x100000 -j SYNPASS-OUT-Q',
      '-A SYNPASS-OUT -m mark --mark 0x100000/0x100000 -j SYNPASS-MARK',
    ]);
  });

  it('queues marker-bearing packets and incoming SYNs before the released-connection shortcut', () => {
    const queue = lines.filter((l) => l.startsWith('-A SYNPASS-IN-Q '));
    const marker = queue.indexOf('-A SYNPASS-IN-Q -p tcp -m tcp --tcp-option 253 -j NFQUEUE --queue-num 3170');
    const syn = queue.indexOf('-A SYNPASS-IN-Q -p tcp -m tcp --tcp-flags SYN,ACK,FIN,RST SYN -j NFQUEUE --queue-num 3170');
    const released = queue.indexOf('-A SYNPASS-IN-Q -m connmark --mark 0x400000/0x400000 -j RETURN');
    assert.ok(marker >= 0 && syn > marker && released > syn, queue.join('\n'));
  });

  it('queues outgoing SYNs only toward target networks of its family', () => {
    const syns = lines.filter((l) => l.startsWith('-A SYNPASS-OUT-Q') && l.includes('SYN,ACK,FIN,RST SYN '));
    assert.deepEqual(syns, ['-A SYNPASS-OUT-Q -d 10.0.0.0/8 -p tcp -m tcp --tcp-flags SYN,ACK,FIN,RST SYN -j NFQUEUE --queue-num 3170']);
    assert.ok(buildRuleset(6, options).includes('-d fd00::/8 -p tcp'));
    assert.ok(!buildRuleset(6, options).includes('10.0.0.0/8'));
  });

  it('excludes networks in both directions and never touches loopback', () => {
    assert.ok(lines.includes('-A SYNPASS-IN-Q -s 10.9.0.0/16 -j RETURN'));
    assert.ok(lines.includes('-A SYNPASS-OUT-Q -d 10.9.0.0/16 -j RETURN'));
    assert.ok(lines.includes('-A SYNPASS-IN-Q -i lo -j RETURN'));
    assert.ok(lines.includes('-A SYNPASS-OUT-Q -o lo -j RETURN'));
  });

  it('records verdict marks into the connmark, clears them from the packet but untracked and leaves it marked judged', () => {
    assert.ok(lines.includes('-A SYNPASS-MARK -m mark --mark 0x200000/0x200000 -j CONNMARK --or-mark 0x200000'));
    assert.ok(lines.includes('-A SYNPASS-MARK -m mark --mark 0x400000/0x400000 -j CONNMARK --or-mark 0x400000'));
    const cleared = lines.indexOf('-A SYNPASS-MARK -j MARK --and-mark 0xfe0fffff');
    assert.ok(cleared > 0 && lines[cleared + 1] === '-A SYNPASS-MARK -j MARK --or-mark 0x800000');
  });

  it('leaves what the host routes alone: only handshakes to and from its own addresses are queued, unless it routes for its own pods', () => {
    const inbound = lines.indexOf('-A SYNPASS-IN-Q -m addrtype ! --dst-type LOCAL -j RETURN');
    const outbound = lines.indexOf('-A SYNPASS-OUT-Q -m addrtype ! --src-type LOCAL -j RETURN');
    assert.ok(inbound > 0 && outbound > 0);
    // Incoming: before anything is queued. Outgoing: before any SYN is, after the answers of the
    // connections the agent follows (a port the host DNATs to a container answers from there).
    const queued = (chain: string) => lines.flatMap((l, index) => (l.startsWith(`-A ${chain} `) && l.includes('NFQUEUE') ? [index] : []));
    assert.ok(queued('SYNPASS-IN-Q').every((index) => index > inbound));
    const tracked = lines.indexOf('-A SYNPASS-OUT-Q -p tcp -m connmark --mark 0x200000/0x200000 -m tcp --tcp-flags ACK ACK -j NFQUEUE --queue-num 3170');
    assert.ok(tracked >= 0 && tracked < outbound);
    assert.ok(queued('SYNPASS-OUT-Q').filter((index) => lines[index]!.includes('--tcp-flags SYN,ACK,FIN,RST SYN')).every((index) => index > outbound));
    const node = buildRuleset(4, { ...options, routedWorkloads: true });
    assert.ok(!node.includes('addrtype'), 'a node judges its pods\' handshakes, which it routes');
    // A pod's fast SYN the kernel vouched for (`pass` and `judged`) keeps `pass` past PREROUTING,
    // so POSTROUTING lets it by too; a verdict's `pass` alone still goes on to SYNPASS-MARK.
    assert.deepEqual(
      node.split('\n').filter((l) => l.startsWith('-A SYNPASS-IN -m mark --mark ')),
      ['-A SYNPASS-IN -m mark --mark 0x900000/0x900000 -j RETURN', '-A SYNPASS-IN -m mark --mark 0x100000/0x100000 -j SYNPASS-MARK'],
    );
  });

  it('failing open, counts incoming SYNs that reach INPUT unjudged (and FORWARD, on a node of pods), with the queue rules exemptions', () => {
    const open = buildRuleset(4, { ...options, failOpen: true }).split('\n');
    assert.ok(open.includes(':SYNPASS-AUDIT - [0:0]'));
    assert.ok(open.includes('-I INPUT 1 -p tcp -m tcp --tcp-flags SYN,ACK,FIN,RST SYN -m comment --comment synpass -j SYNPASS-AUDIT'));
    assert.ok(!open.some((l) => l.startsWith('-I FORWARD')), 'routed SYNs are not judged: FORWARD would count every one');
    const node = buildRuleset(4, { ...options, failOpen: true, routedWorkloads: true }).split('\n');
    assert.ok(node.includes('-I FORWARD 1 -p tcp -m tcp --tcp-flags SYN,ACK,FIN,RST SYN -m comment --comment synpass -j SYNPASS-AUDIT'));
    const audit = open.filter((l) => l.startsWith('-A SYNPASS-AUDIT'));
    assert.deepEqual(audit, [
      '-A SYNPASS-AUDIT -i lo -j RETURN',
      '-A SYNPASS-AUDIT -s 10.9.0.0/16 -j RETURN',
      '-A SYNPASS-AUDIT -m mark ! --mark 0x800000/0x800000 -m comment --comment synpass-unjudged',
    ]);
  });

  it('failing closed, adds no INPUT or FORWARD hook: no SYN can pass unjudged, and every packet would pay it', () => {
    assert.deepEqual(
      lines.filter((l) => /INPUT|FORWARD|AUDIT/.test(l)),
      [],
    );
  });

  it('balances across queues and adds --queue-bypass when failing open', () => {
    const balanced = buildRuleset(4, { ...options, queueCount: 4, failOpen: true });
    assert.ok(balanced.includes('-j NFQUEUE --queue-balance 3170:3173 --queue-bypass'));
    assert.ok(!v4.includes('--queue-bypass'));
  });
});

describe('buildRemoval', () => {
  it('deletes jumps, then flushes and deletes every synpass chain', () => {
    const saved = [
      '*mangle',
      ':PREROUTING ACCEPT [0:0]',
      ':SYNPASS-IN - [0:0]',
      ':SYNPASS-MARK - [0:0]',
      '-A PREROUTING -p tcp -m comment --comment synpass -j SYNPASS-IN',
      '-A PREROUTING -j OTHER',
      '-A SYNPASS-IN -m mark --mark 0x100000/0x100000 -j SYNPASS-MARK',
      'COMMIT',
    ].join('\n');
    assert.equal(
      buildRemoval(saved),
      [
        '*mangle',
        '-D PREROUTING -p tcp -m comment --comment synpass -j SYNPASS-IN',
        '-F SYNPASS-IN',
        '-F SYNPASS-MARK',
        '-X SYNPASS-IN',
        '-X SYNPASS-MARK',
        'COMMIT',
        '',
      ].join('\n'),
    );
  });

  it('reads the unjudged-SYN counter from iptables-save -c output', () => {
    const saved = [
      '*mangle',
      '[12:720] -A INPUT -p tcp -m comment --comment synpass -j SYNPASS-AUDIT',
      '[3:180] -A SYNPASS-AUDIT -i lo -j RETURN',
      '[7:420] -A SYNPASS-AUDIT -m mark ! --mark 0x800000/0x800000 -m comment --comment synpass-unjudged',
      'COMMIT',
    ].join('\n');
    assert.equal(unjudgedSynCount(saved), 7);
    assert.equal(unjudgedSynCount('*mangle\nCOMMIT\n'), 0);
  });

  it('holds each source to its rate on the way into the queue: per IPv4 address, per IPv6 /64', () => {
    const limited = { ...options, queueRatePerSource: 5000 };
    for (const [family, mask] of [[4, 32], [6, 64]] as const) {
      const rules = buildRuleset(family, limited).split('\n');
      assert.ok(rules.includes(':SYNPASS-IN-LIMIT - [0:0]'));
      const chain = rules.filter((l) => l.startsWith('-A SYNPASS-IN-LIMIT '));
      // A SYN the kernel fast path charged to its own bucket (the `budgeted` bit) is not charged twice.
      assert.equal(chain.shift(), '-A SYNPASS-IN-LIMIT -m mark --mark 0x1000000/0x1000000 -j NFQUEUE --queue-num 3170');
      assert.match(chain[0]!, new RegExp(`^-A SYNPASS-IN-LIMIT -m hashlimit --hashlimit-above 5000/sec --hashlimit-burst 1024 --hashlimit-mode srcip --hashlimit-srcmask ${mask} .*--comment synpass-source-limited -j DROP$`));
      assert.equal(chain[1], '-A SYNPASS-IN-LIMIT -j NFQUEUE --queue-num 3170');
      assert.equal(chain.length, 2);
      // Every ingress packet bound for the queue goes through the limit; nothing else does.
      const ingress = rules.filter((l) => l.startsWith('-A SYNPASS-IN-Q '));
      assert.equal(ingress.filter((l) => l.includes('NFQUEUE')).length, 0);
      assert.equal(ingress.filter((l) => l.endsWith('-j SYNPASS-IN-LIMIT')).length, 3);
      assert.ok(rules.filter((l) => l.startsWith('-A SYNPASS-OUT-Q ')).some((l) => l.includes('NFQUEUE')), 'egress is not limited');
    }
    // A burst is a second's worth, but at most a quarter of the queue.
    assert.match(buildRuleset(4, { ...limited, queueMaxLength: 100_000 }), /--hashlimit-above 5000\/sec --hashlimit-burst 5000 /);
    assert.deepEqual([sourceBurst(5000, 4096), sourceBurst(500, 4096), sourceBurst(5000, 2), sourceBurst(1, 4096)], [1024, 500, 1, 1]);
    const unlimited = buildRuleset(4, options);
    assert.doesNotMatch(unlimited, /hashlimit|SYNPASS-IN-LIMIT/, '0 turns it off');
    const saved = ['*mangle', '[40:2400] -A SYNPASS-IN-LIMIT -m hashlimit --hashlimit-above 5000/sec -m comment --comment synpass-source-limited -j DROP', 'COMMIT'].join('\n');
    assert.equal(sourceLimitedCount(saved), 40);
    assert.equal(sourceLimitedCount('*mangle\nCOMMIT\n'), 0);
  });

  it('tells a complete ruleset from a partly flushed one, with or without counters', () => {
    const installed = buildRuleset(4, options)
      .split('\n')
      .filter((line) => line.startsWith('-A ') || line.startsWith('-I '))
      .map((line) => line.replace(/^-I (\S+) \d+ /, '-A $1 '));
    assert.equal(rulesPresent(4, ['*mangle', ...installed, 'COMMIT'].join('\n'), options), true);
    assert.equal(rulesPresent(4, ['*mangle', ...installed.map((line) => `[3:180] ${line}`), 'COMMIT'].join('\n'), options), true);
    const flushed = installed.filter((line) => !line.startsWith('-A SYNPASS-IN-Q '));
    assert.equal(rulesPresent(4, ['*mangle', ...flushed, 'COMMIT'].join('\n'), options), false);
    // Each family against its own ruleset: here IPv6 has no target network, so fewer rules.
    const targeted = { ...options, targetNetworks: ['10.0.0.0/8'] };
    const rulesOf = (family: 4 | 6) => buildRuleset(family, targeted).split('\n').filter((line) => line.startsWith('-A ') || line.startsWith('-I ')).map((line) => line.replace(/^-I (\S+) \d+ /, '-A $1 '));
    const saved6 = ['*mangle', ...rulesOf(6), 'COMMIT'].join('\n');
    assert.notEqual(rulesOf(6).length, rulesOf(4).length);
    assert.equal(rulesPresent(6, saved6, targeted), true);
    assert.equal(rulesPresent(4, saved6, targeted), false);
    assert.equal(rulesPresent(6, ['*mangle', ...rulesOf(6).slice(1), 'COMMIT'].join('\n'), targeted), false);
  });

  it('sends a SYN this host DNATed fast when the pinned program finds its sender\'s entry: back to SYNPASS-OUT with `pass`, before SYNPASS-OUT-Q queues it; on a host that is no node, nothing more', () => {
    const pins = { backend: '/sys/fs/bpf/synpass/service_backend', translated: '/sys/fs/bpf/synpass/translated_syn' };
    const host = { ...options, routedWorkloads: false };
    const translated = [
      `-I SYNPASS-OUT-Q 1 ! -o lo -p tcp -m tcp --tcp-flags SYN,ACK,FIN,RST SYN -m bpf --object-pinned ${pins.translated} -j MARK --or-mark 0x100000`,
      '-I SYNPASS-OUT-Q 2 -m mark --mark 0x100000/0x100000 -j RETURN',
    ];
    assert.deepEqual(buildDeferRuleset(host, pins).split('\n'), ['*mangle', ...translated, 'COMMIT', '']);
    // No packet reaches SYNPASS-OUT-Q carrying `pass`: only the program's match returns.
    assert.ok(buildRuleset(4, host).includes('-A SYNPASS-OUT -m mark ! --mark 0x100000/0x100000 -j SYNPASS-OUT-Q'));
    assert.ok(buildRuleset(4, host).includes('-A SYNPASS-OUT -m mark --mark 0x100000/0x100000 -j SYNPASS-MARK'));
    const node = { ...options, routedWorkloads: true };
    assert.deepEqual(buildDeferRuleset(node, pins).split('\n').slice(1, 3), translated);
    const saved = (text: string) => text.split('\n').filter((line) => line.startsWith('-A ') || line.startsWith('-I ') || line.startsWith(':')).map((line) => line.replace(/^-I (\S+) \d+ /, '-A $1 '));
    const both = ['*mangle', ...saved(buildRuleset(4, host)), ...saved(buildDeferRuleset(host, pins)), 'COMMIT'].join('\n');
    assert.equal(rulesPresent(4, both, { ...host, deferPrograms: pins }), true);
  });

  it('judges a node\'s pods\' deferred SYNs after the DNAT: unqueued in PREROUTING, the pinned programs or the queue in POSTROUTING, the queue in INPUT', () => {
    const node = { ...options, routedWorkloads: true };
    const pins = { backend: '/sys/fs/bpf/synpass/service_backend', translated: '/sys/fs/bpf/synpass/translated_syn' };
    const deferred = `0x${deferMark(node.marks).toString(16)}/0x${deferMark(node.marks).toString(16)}`;
    assert.equal(deferMark(node.marks), node.marks.pass | node.marks.budgeted);
    const rules = buildDeferRuleset(node, pins).split('\n');
    assert.deepEqual(rules.filter((line) => line.startsWith('-I ') && !line.startsWith('-I SYNPASS-OUT-Q ')), [
      `-I SYNPASS-IN 1 -m mark --mark ${deferred} -j RETURN`,
      `-I SYNPASS-OUT 1 -m mark --mark ${deferred} -j SYNPASS-DEFER`,
      '-I INPUT 1 -p tcp -m mark --mark 0x100000/0x900000 -j SYNPASS-DEFER-IN',
    ]);
    assert.deepEqual(rules.filter((line) => line.startsWith('-A ')), [
      `-A SYNPASS-DEFER -m bpf --object-pinned ${pins.backend} -j MARK --or-mark 0x400000`,
      '-A SYNPASS-DEFER -m mark --mark 0x400000/0x400000 -j SYNPASS-MARK',
      // Back in SYNPASS-OUT it carries `pass`, which its SYNPASS-MARK jump clears: judged, not released.
      `-A SYNPASS-DEFER -m mark --mark ${deferred} -m bpf --object-pinned ${pins.translated} -j RETURN`,
      `-A SYNPASS-DEFER -m mark --mark ${deferred} -j NFQUEUE --queue-num 3170`,
      `-A SYNPASS-DEFER-IN -m mark --mark ${deferred} -j NFQUEUE --queue-num 3170`,
      '-A SYNPASS-DEFER-IN -j SYNPASS-MARK',
    ]);
    // Failing open, the audit rule leaves a deferred SYN alone: it is judged after FORWARD.
    assert.ok(buildDeferRuleset({ ...node, failOpen: true }, pins).includes(`-I SYNPASS-AUDIT 1 -m mark --mark ${deferred} -j RETURN`));
    // The watchdog expects them once they are in, and removal takes them with the rest.
    const saved = (text: string) => text.split('\n').filter((line) => line.startsWith('-A ') || line.startsWith('-I ') || line.startsWith(':')).map((line) => line.replace(/^-I (\S+) \d+ /, '-A $1 '));
    const both = ['*mangle', ...saved(buildRuleset(4, node)), ...saved(buildDeferRuleset(node, pins)), 'COMMIT'].join('\n');
    assert.equal(rulesPresent(4, both, { ...node, deferPrograms: pins }), true);
    assert.equal(rulesPresent(4, both, node), false, 'rules it did not put in are not its ruleset');
    const removal = buildRemoval(both)!;
    assert.ok(removal.includes('-D INPUT -p tcp -m mark --mark 0x100000/0x900000 -j SYNPASS-DEFER-IN'));
    assert.ok(removal.includes('-X SYNPASS-DEFER\n') && removal.includes('-X SYNPASS-DEFER-IN\n'));
  });

  it('counts the other rules ahead of the hook jumps, in each hook chain up to its jump', () => {
    const saved = (prerouting: string[], postrouting: string[]) => ['*mangle', ...prerouting, ...postrouting, '-A SYNPASS-IN -j RETURN', 'COMMIT'].join('\n');
    const inJump = '-A PREROUTING -p tcp -j SYNPASS-IN';
    const outJump = '-A POSTROUTING -p tcp -j SYNPASS-OUT';
    assert.equal(rulesAheadOfHooks(saved([inJump, '-A PREROUTING -j OTHER'], [outJump])), 0);
    assert.equal(rulesAheadOfHooks(saved(['-A PREROUTING -p tcp -j ACCEPT', '[5:300] -A PREROUTING -j MARK --set-mark 1', `[9:540] ${inJump}`], ['-A POSTROUTING -j CILIUM_POST_mangle', outJump])), 3);
    // A chain without our jump is the missing-rules case, not this one.
    assert.equal(rulesAheadOfHooks(saved(['-A PREROUTING -j ACCEPT'], [outJump])), 0);
  });

  it('finds NAT rules in an nft ruleset: a rule in a chain of type nat, not an empty nat chain iptables-nft left behind', () => {
    // As `nft -j list ruleset` printed them here (nftables 1.0.6), after an iptables-nft nat rule came and went.
    const meta = { metainfo: { version: '1.0.6', json_schema_version: 1 } };
    const natTable = { table: { family: 'ip', name: 'nat', handle: 1 } };
    const output = { chain: { family: 'ip', table: 'nat', name: 'OUTPUT', handle: 1, type: 'nat', hook: 'output', prio: -100, policy: 'accept' } };
    const rule = (family: string, table: string, chain: string) => ({ rule: { family, table, chain, handle: 3, expr: [{ accept: null }] } });
    const ruleset = (...items: object[]) => JSON.stringify({ nftables: [meta, ...items] });
    assert.equal(nftNatRules(ruleset(natTable, output)), false, 'an empty nat chain');
    assert.equal(nftNatRules(ruleset(natTable, output, rule('ip', 'nat', 'OUTPUT'))), true);
    // kube-proxy's nftables mode: its own table, a base chain of type nat that jumps on.
    const kubeProxy = { chain: { family: 'ip', table: 'kube-proxy', name: 'nat-prerouting', type: 'nat', hook: 'prerouting', prio: -100 } };
    assert.equal(nftNatRules(ruleset({ table: { family: 'ip', name: 'kube-proxy' } }, kubeProxy, rule('ip', 'kube-proxy', 'nat-prerouting'))), true);
    // A rule of a filter chain, or of a chain of the same name in another family or table, is none.
    const filter = { chain: { family: 'inet', table: 'synpass', name: 'OUTPUT', type: 'filter', hook: 'output', prio: -300 } };
    assert.equal(nftNatRules(ruleset(natTable, output, filter, rule('inet', 'synpass', 'OUTPUT'), rule('ip6', 'nat', 'OUTPUT'))), false);
    // Not nft's JSON: no answer (iptables-save asks instead); odd items in its list hold no rule.
    for (const broken of ['', 'not json', 'null', '{}', '{"nftables": {}}']) assert.equal(nftNatRules(broken), null, broken);
    assert.equal(nftNatRules('{"nftables": [null, 3, {"rule": null}, {"chain": 7}]}'), false);
  });

  it('names the built-in chains that only synpass jumps keep, and no chain that holds anything else', () => {
    const saved = [
      '*mangle',
      ':PREROUTING ACCEPT [0:0]',
      ':INPUT ACCEPT [0:0]',
      ':FORWARD DROP [0:0]',
      ':OUTPUT ACCEPT [0:0]',
      ':POSTROUTING ACCEPT [0:0]',
      ':SYNPASS-IN - [0:0]',
      '[4:240] -A PREROUTING -p tcp -j SYNPASS-IN',
      '-A INPUT -p tcp -m tcp --tcp-flags SYN,ACK,FIN,RST SYN -m comment --comment synpass -j SYNPASS-AUDIT',
      '-A FORWARD -p tcp -j SYNPASS-AUDIT',
      '-A POSTROUTING -p tcp -j SYNPASS-OUT',
      '-A POSTROUTING -j CONNMARK --save-mark',
      '-A SYNPASS-IN -j RETURN',
      'COMMIT',
    ].join('\n');
    // FORWARD has a DROP policy, OUTPUT was never ours, POSTROUTING keeps another rule.
    assert.deepEqual(emptiedBuiltinChains(saved), ['PREROUTING', 'INPUT']);
  });

  it('leaves the untracked bit\'s packets out of conntrack natively in an nftables table of its own, replaced whole', () => {
    assert.equal(
      buildNativeNotrack(connectionMarks(0x100000)),
      [
        'table inet synpass',
        'delete table inet synpass',
        'table inet synpass {',
        '  chain notrack-prerouting { type filter hook prerouting priority raw; policy accept; meta l4proto tcp meta mark & 0x2000000 == 0x2000000 notrack; }',
        '  chain notrack-output { type filter hook output priority raw; policy accept; meta l4proto tcp meta mark & 0x2000000 == 0x2000000 notrack; }',
        '}',
        '',
      ].join('\n'),
    );
  });

  it('removes the raw table\'s notrack chain and jumps as it installs them', () => {
    const raw = buildNotrackRuleset(connectionMarks(0x100000));
    assert.equal(
      raw,
      [
        '*raw',
        ':SYNPASS-NOTRACK - [0:0]',
        '-I PREROUTING 1 -p tcp -m mark --mark 0x2000000/0x2000000 -j SYNPASS-NOTRACK',
        '-I OUTPUT 1 -p tcp -m mark --mark 0x2000000/0x2000000 -j SYNPASS-NOTRACK',
        '-A SYNPASS-NOTRACK -j CT --notrack',
        'COMMIT',
        '',
      ].join('\n'),
    );
    const saved = [
      '*raw',
      ':PREROUTING ACCEPT [0:0]',
      ':OUTPUT ACCEPT [0:0]',
      ':SYNPASS-NOTRACK - [0:0]',
      '-A PREROUTING -p tcp -m mark --mark 0x2000000/0x2000000 -j SYNPASS-NOTRACK',
      '-A OUTPUT -p tcp -m mark --mark 0x2000000/0x2000000 -j SYNPASS-NOTRACK',
      '-A SYNPASS-NOTRACK -j CT --notrack',
      'COMMIT',
    ].join('\n');
    assert.equal(
      buildRemoval(saved, 'raw'),
      [
        '*raw',
        '-D PREROUTING -p tcp -m mark --mark 0x2000000/0x2000000 -j SYNPASS-NOTRACK',
        '-D OUTPUT -p tcp -m mark --mark 0x2000000/0x2000000 -j SYNPASS-NOTRACK',
        '-F SYNPASS-NOTRACK',
        '-X SYNPASS-NOTRACK',
        'COMMIT',
        '',
      ].join('\n'),
    );
    assert.deepEqual(emptiedBuiltinChains(saved), ['PREROUTING', 'OUTPUT']);
  });

  it('returns null when nothing of synpass is installed', () => {
    assert.equal(buildRemoval('*mangle\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n'), null);
  });
});

describe('connectionMarks', () => {
  it('takes six consecutive bits and rejects a non-bit base or one without room for six', () => {
    assert.deepEqual(connectionMarks(0x10), { pass: 0x10, track: 0x20, release: 0x40, judged: 0x80, budgeted: 0x100, untracked: 0x200, all: 0x3f0 });
    assert.equal(connectionMarks(0x04000000).all, 0xfc000000);
    assert.throws(() => connectionMarks(0x30), RangeError);
    assert.throws(() => connectionMarks(0), RangeError);
    assert.throws(() => connectionMarks(0x08000000), RangeError);
  });
});
