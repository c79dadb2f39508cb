import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseProcNetTcp } from '../../../agent/src/whois/proc-net-tcp.ts';
import { PeerRegistry, SWEEP_AFTER_RECORDS } from '../../../agent/src/whois/registry.ts';
import { answerWhois } from '../../../agent/src/whois/server.ts';
import type { VerifiedIdentity } from '../../../agent/src/token/identity-token.ts';

const TCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:24F8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1506081 1
   1: 020ED50A:1B58 010ED50A:9F5E 01 00000000:00000000 00:00000000 00000000  1000        0 1506871 1`;
const TCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0000000000000000FFFF0000020ED50A:1B58 0000000000000000FFFF0000010ED50A:5D2E 01 00000000:00000000 00:00000000 00000000     0        0 1510942 1`;

const identity = { subject: 'spiffe://d/web' } as VerifiedIdentity;

describe('whois', () => {
  it('reads owners and endpoints from /proc/net/tcp and tcp6 (IPv4-mapped shown as IPv4)', () => {
    const sockets = [...parseProcNetTcp(TCP), ...parseProcNetTcp(TCP6)];
    assert.deepEqual(sockets[0], { local: '127.0.0.1:9464', remote: '0.0.0.0:0', state: 10, uid: 0 });
    assert.deepEqual(sockets[1], { local: '10.213.14.2:7000', remote: '10.213.14.1:40798', state: 1, uid: 1000 });
    assert.deepEqual(sockets[2]?.local, '10.213.14.2:7000');
    assert.equal(sockets[2]?.remote, '10.213.14.1:23854');
  });

  it('answers the owner and root, refuses anyone else, and says not-found for unknown tuples', () => {
    const sockets = parseProcNetTcp(TCP);
    const registry = new PeerRegistry();
    registry.record('10.213.14.2:7000', '10.213.14.1:40798', identity);
    const ask = (uid: number, a = '10.213.14.1:40798', b = '10.213.14.2:7000') => answerWhois({ a, b }, { pid: 1, uid, gid: uid }, registry, sockets);
    assert.equal('found' in ask(1000), true);
    assert.equal('found' in ask(0, '10.213.14.2:7000', '10.213.14.1:40798'), true);
    assert.deepEqual(ask(1001), { error: 'forbidden', detail: 'only the owner of the connection (or root) may ask' });
    assert.equal((ask(0, '10.213.14.1:1') as { error: string }).error, 'not-found');
    assert.equal((answerWhois({ a: 'nonsense' }, { pid: 1, uid: 0, gid: 0 }, registry, sockets) as { error: string }).error, 'bad-request');
    registry.retain(new Set());
    assert.equal((ask(0) as { error: string }).error, 'not-found');
  });

  it('asks for a sweep once enough connections were recorded, and is capped at its limit', () => {
    const registry = new PeerRegistry(2_000);
    for (let i = 0; i < SWEEP_AFTER_RECORDS - 1; i++) registry.record('10.0.0.2:80', `10.0.0.1:${String(10_000 + i)}`, identity);
    assert.equal(registry.sweepDue, false);
    registry.record('10.0.0.2:80', '10.0.0.1:9999', identity);
    assert.equal(registry.sweepDue, true);
    registry.retain(new Set(['10.0.0.2:80|10.0.0.1:9999']));
    assert.equal(registry.sweepDue, false);
    assert.equal(registry.size, 1);
    for (let i = 0; i < 5_000; i++) registry.record('10.0.0.2:80', `10.0.0.1:${String(i)}`, identity);
    assert.equal(registry.size, 2_000);
    assert.equal(registry.get('10.0.0.2:80', '10.0.0.1:4999'), identity);
    assert.equal(registry.get('10.0.0.2:80', '10.0.0.1:0'), undefined);
  });
});
