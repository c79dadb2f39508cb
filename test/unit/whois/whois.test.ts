import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseProcNetTcp } from '../../../agent/src/whois/proc-net-tcp.ts';
import { PeerRegistry, SWEEP_AFTER_RECORDS } from '../../../agent/src/whois/registry.ts';
import { answerWhois } from '../../../agent/src/whois/server.ts';
import { handshakeEnds, type ConntrackLookup } from '../../../agent/src/whois/translation.ts';
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
    registry.retain([]);
    assert.equal((ask(0) as { error: string }).error, 'not-found');
  });

  it('asks for a sweep once enough connections were recorded, and is capped at its limit', () => {
    const registry = new PeerRegistry(2_000);
    for (let i = 0; i < SWEEP_AFTER_RECORDS - 1; i++) registry.record('10.0.0.2:80', `10.0.0.1:${String(10_000 + i)}`, identity);
    assert.equal(registry.sweepDue, false);
    registry.record('10.0.0.2:80', '10.0.0.1:9999', identity);
    assert.equal(registry.sweepDue, true);
    registry.retain([{ local: '10.0.0.2:80', remote: '10.0.0.1:9999' }]);
    assert.equal(registry.sweepDue, false);
    assert.equal(registry.size, 1);
    for (let i = 0; i < 5_000; i++) registry.record('10.0.0.2:80', `10.0.0.1:${String(i)}`, identity);
    assert.equal(registry.size, 2_000);
    assert.equal(registry.get('10.0.0.2:80', '10.0.0.1:4999'), identity);
    assert.equal(registry.get('10.0.0.2:80', '10.0.0.1:0'), undefined);
  });

  /** A conntrack of one entry: original `from` -> `to`, answered from `answerFrom` to `answerTo`. */
  function conntrackOf(from: string, to: string, answerFrom: string, answerTo: string): { lookup: ConntrackLookup; asked: string[] } {
    const tuple = (source: string, destination: string) => {
      const [sourceAddress, sourcePort] = split(source);
      const [destinationAddress, destinationPort] = split(destination);
      return { source: sourceAddress, sourcePort, destination: destinationAddress, destinationPort };
    };
    const split = (end: string): [Buffer, number] => {
      const at = end.lastIndexOf(':');
      const host = end.slice(0, at);
      const bytes = host.includes(':') ? Buffer.from(host.split(':').flatMap((group) => { const v = Number.parseInt(group, 16); return [v >> 8, v & 0xff]; })) : Buffer.from(host.split('.').map(Number));
      return [bytes, Number(end.slice(at + 1))];
    };
    const entry = { original: tuple(from, to), reply: tuple(answerFrom, answerTo) };
    const asked: string[] = [];
    // As the kernel does, a tuple finds its entry in either direction.
    const lookup: ConntrackLookup = (family, source, sourcePort, destination, destinationPort) => {
      asked.push(`IPv${family}`);
      const same = (side: typeof entry.original) => side.source.equals(source) && side.sourcePort === sourcePort && side.destination.equals(destination) && side.destinationPort === destinationPort;
      return same(entry.original) || same(entry.reply) ? entry : null;
    };
    return { lookup, asked };
  }

  it('finds the handshake of a connection a NAT on this host translates, through conntrack, on either end', () => {
    // The client end of a connection to a local service address: the SYN-ACK came from the address behind the DNAT.
    const dnat = conntrackOf('10.0.0.1:40000', '10.96.0.10:80', '10.0.0.2:8080', '10.0.0.1:40000');
    assert.deepEqual(handshakeEnds({ local: '10.0.0.1:40000', remote: '10.96.0.10:80' }, dnat.lookup), { local: '10.0.0.1:40000', remote: '10.0.0.2:8080' });
    assert.deepEqual(dnat.asked, ['IPv4']);
    // The client end of a connection its host source-NATs: the SYN-ACK came to the NAT's address.
    const snat = conntrackOf('fd00:0:0:0:0:0:0:1:40000', 'fd00:0:0:0:0:0:0:2:443', 'fd00:0:0:0:0:0:0:2:443', 'fd00:0:0:0:0:0:0:9:40001');
    assert.deepEqual(handshakeEnds({ local: 'fd00:0:0:0:0:0:0:1:40000', remote: 'fd00:0:0:0:0:0:0:2:443' }, snat.lookup), { local: 'fd00:0:0:0:0:0:0:9:40001', remote: 'fd00:0:0:0:0:0:0:2:443' });
    // The server end of a connection a PREROUTING redirect sent to a local listener: the SYN came to the port before it.
    const redirect = conntrackOf('10.0.0.1:40000', '10.0.0.2:80', '10.0.0.2:8080', '10.0.0.1:40000');
    assert.deepEqual(handshakeEnds({ local: '10.0.0.2:8080', remote: '10.0.0.1:40000' }, redirect.lookup), { local: '10.0.0.2:80', remote: '10.0.0.1:40000' });
    assert.deepEqual(redirect.asked, ['IPv4']);
    // Not translated, not in conntrack, or ends of two families: nothing to find.
    const plain = conntrackOf('10.0.0.1:40000', '10.0.0.2:80', '10.0.0.2:80', '10.0.0.1:40000');
    assert.equal(handshakeEnds({ local: '10.0.0.1:40000', remote: '10.0.0.2:80' }, plain.lookup), null);
    assert.equal(handshakeEnds({ local: '10.0.0.2:80', remote: '10.0.0.1:40000' }, plain.lookup), null);
    assert.equal(handshakeEnds({ local: '10.0.0.3:1', remote: '10.0.0.2:80' }, plain.lookup), null);
    assert.equal(handshakeEnds({ local: '10.0.0.1:40000', remote: 'fd00:0:0:0:0:0:0:2:80' }, plain.lookup), null);
  });

  it('answers for a translated connection as its socket shows it, and keeps its entry while the socket lives', () => {
    const registry = new PeerRegistry();
    // Filed as the handshake showed it, behind the DNAT; the socket has the service address.
    registry.record('10.213.14.1:40000', '10.213.14.2:8080', identity);
    const socket = { local: '10.213.14.1:40000', remote: '10.96.0.10:80', state: 1, uid: 1000 };
    const { lookup } = conntrackOf('10.213.14.1:40000', '10.96.0.10:80', '10.213.14.2:8080', '10.213.14.1:40000');
    const ask = (conntrack: ConntrackLookup | null) => answerWhois({ a: '10.213.14.1:40000', b: '10.96.0.10:80' }, { pid: 1, uid: 1000, gid: 1000 }, registry, [socket], conntrack);
    assert.deepEqual(ask(lookup), { found: true, local: '10.213.14.1:40000', remote: '10.96.0.10:80', identity });
    assert.equal((ask(null) as { error: string }).error, 'not-found');
    registry.retain([socket]);
    assert.equal(registry.size, 1, 'kept: the live socket has its local end and no entry of its own');
    // The server end of a redirect: the accepted socket has the client's end.
    registry.record('10.213.14.2:80', '10.213.14.1:41000', identity);
    const accepted = { local: '10.213.14.2:8080', remote: '10.213.14.1:41000' };
    registry.retain([socket, accepted]);
    assert.equal(registry.size, 2);
    // The client end of a source NAT that kept the port, among other connections to the same server.
    registry.record('192.0.2.9:41000', '10.213.14.3:443', identity);
    const natted = { local: '10.213.14.1:41000', remote: '10.213.14.3:443' };
    const others = [{ local: '10.213.14.1:41001', remote: '10.213.14.3:443' }];
    registry.record(others[0]!.local, others[0]!.remote, identity);
    registry.retain([socket, accepted, natted, ...others]);
    assert.equal(registry.size, 4);
    registry.retain([socket, accepted, ...others]);
    assert.equal(registry.has('192.0.2.9:41000', '10.213.14.3:443'), false, 'gone with its socket');
    // Gone once the socket is.
    registry.retain([accepted]);
    assert.deepEqual([registry.has('10.213.14.1:40000', '10.213.14.2:8080'), registry.size], [false, 1]);
    registry.retain([]);
    assert.equal(registry.size, 0);
  });

  it('keeps no entry for an end that several sockets share, nor for a socket with an entry of its own', () => {
    const registry = new PeerRegistry();
    // Connections to a listener that are gone, while others (the kernel fast path's, with no entry here) remain.
    for (let port = 50_000; port < 50_010; port++) registry.record('10.0.0.2:8080', `10.0.0.1:${port}`, identity);
    const fast = [{ local: '10.0.0.2:8080', remote: '10.0.0.3:1' }, { local: '10.0.0.2:8080', remote: '10.0.0.3:2' }];
    registry.retain(fast);
    assert.equal(registry.size, 0);
    // A socket that has its own entry keeps only that one.
    registry.record('10.0.0.1:40000', '10.0.0.2:80', identity);
    registry.record('10.0.0.1:40000', '10.0.0.9:80', identity);
    registry.retain([{ local: '10.0.0.1:40000', remote: '10.0.0.2:80' }]);
    assert.deepEqual([registry.has('10.0.0.1:40000', '10.0.0.2:80'), registry.size], [true, 1]);
  });
});
