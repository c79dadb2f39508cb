// The first-contact rehearsal: whole handshakes between two throwaway agents in memory, through
// the real engine and handshake code, each one a first contact; it ends early when told to.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { LINUX_HANDSHAKE, LINUX_HANDSHAKE_IPV6, rehearseFirstContacts } from '../../../agent/src/handshake/rehearsal.ts';
import { ParsedPacket, parsePacket } from '../../../agent/src/datapath/packet.ts';

describe('first-contact rehearsal', () => {
  it('completes every handshake, with either signing key and either CA key', async () => {
    assert.deepEqual((await rehearseFirstContacts(12, { signingKey: 'ed25519', caKey: 'ed25519' })).handshakes, 12);
    assert.deepEqual((await rehearseFirstContacts(3, { signingKey: 'p256', caKey: 'ed25519' })).handshakes, 3);
    assert.deepEqual((await rehearseFirstContacts(3, { signingKey: 'ed25519', caKey: 'p256' })).handshakes, 3);
  });

  it('stops when the agent stops', async () => {
    const stopping = new AbortController();
    stopping.abort();
    assert.equal((await rehearseFirstContacts(50, { signingKey: 'ed25519', caKey: 'ed25519', signal: stopping.signal })).handshakes, 0);
  });

  it('reports a handshake its agents do not complete, with the step and the reason', async () => {
    // A clock that runs ten minutes a reading: the SYN is stale by the time the server reads it.
    const start = Date.now();
    let readings = 0;
    const now = () => start + 600_000 * readings++;
    await assert.rejects(rehearseFirstContacts(2, { signingKey: 'ed25519', caKey: 'ed25519', now }), (error: Error & { code?: string; context?: Record<string, string> }) => {
      assert.equal(error.name, 'RehearsalError');
      assert.equal(error.code, 'handshake-failed');
      assert.deepEqual(error.context, { step: 'server SYN', reason: 'stale-timestamp' });
      return true;
    });
  });

  it('completes IPv6 handshakes as well as IPv4 ones (they alternate)', async () => {
    // The second handshake is the first IPv6 one: a failure there names its step.
    assert.equal((await rehearseFirstContacts(2, { signingKey: 'ed25519', caKey: 'ed25519' })).handshakes, 2);
  });

  for (const [family, handshake] of [['IPv4', LINUX_HANDSHAKE], ['IPv6', LINUX_HANDSHAKE_IPV6]] as const) {
    it(`rehearses a handshake Linux sends over ${family}: SYN, its SYN-ACK and the first ACK of one connection`, () => {
      const parsed = Object.values(handshake).map((bytes) => {
        const packet = new ParsedPacket();
        assert.ok(parsePacket(bytes, 0, bytes.length, packet), packet.status);
        return packet;
      });
      const [syn, synAck, ack] = parsed as [ParsedPacket, ParsedPacket, ParsedPacket];
      assert.equal(synAck.acknowledgment, (syn.sequence + 1) >>> 0);
      assert.deepEqual([ack.sequence, ack.acknowledgment], [(syn.sequence + 1) >>> 0, (synAck.sequence + 1) >>> 0]);
    });
  }
});
