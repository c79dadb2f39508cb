import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connectionMarks } from '../../../agent/src/datapath/marks.ts';
import { buildRemoval, buildRuleset, type RuleOptions } from '../../../agent/src/datapath/rules.ts';

const options: RuleOptions = {
  queueNumber: 3170,
  queueCount: 1,
  failOpen: false,
  marks: connectionMarks(0x100000),
  targetNetworks: ['10.0.0.0/8', 'fd00::/8'],
  excludedNetworks: ['10.9.0.0/16'],
};

describe('buildRuleset', () => {
  const v4 = buildRuleset(4, options);
  const lines = v4.split('\n');

  it('hooks its chains first in PREROUTING and POSTROUTING of mangle', () => {
    assert.equal(lines[0], '*mangle');
    assert.ok(lines.includes('-I PREROUTING 1 -p tcp -m comment --comment synpass -j SYNPASS-IN'));
    assert.ok(lines.includes('-I POSTROUTING 1 -p tcp -m comment --comment synpass -j SYNPASS-OUT'));
    assert.equal(lines.at(-2), 'COMMIT');
  });

  it('queues marker-bearing packets before the released-connection shortcut', () => {
    const marker = lines.findIndex((l) => l.includes('--tcp-option 253'));
    const released = lines.findIndex((l) => l.startsWith('-A SYNPASS-IN-Q -m connmark --mark 0x400000/0x400000 -j RETURN'));
    assert.ok(marker > 0 && released > marker);
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

  it('records verdict marks into the connmark and clears them from the packet', () => {
    assert.ok(lines.includes('-A SYNPASS-MARK -m mark --mark 0x200000/0x200000 -j CONNMARK --or-mark 0x200000'));
    assert.ok(lines.includes('-A SYNPASS-MARK -m mark --mark 0x400000/0x400000 -j CONNMARK --or-mark 0x400000'));
    assert.ok(lines.includes('-A SYNPASS-MARK -j MARK --and-mark 0xff8fffff'));
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

  it('returns null when nothing of synpass is installed', () => {
    assert.equal(buildRemoval('*mangle\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n'), null);
  });
});

describe('connectionMarks', () => {
  it('takes three consecutive bits and rejects a non-bit base', () => {
    assert.deepEqual(connectionMarks(0x10), { pass: 0x10, track: 0x20, release: 0x40, all: 0x70 });
    assert.throws(() => connectionMarks(0x30), RangeError);
    assert.throws(() => connectionMarks(0), RangeError);
  });
});
