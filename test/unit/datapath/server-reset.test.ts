import { it } from 'node:test';
import assert from 'node:assert/strict';
import { finishChecksum, sumWords } from '../../../agent/src/datapath/checksum.ts';
import { ParsedPacket, parsePacket, TCP_RST } from '../../../agent/src/datapath/packet.ts';
import { buildServerReset, SERVER_RESET_MAX_BYTES } from '../../../agent/src/datapath/server-reset.ts';
import { IPV4_SYN, IPV4_SYN_ACK, IPV6_SYN, IPV6_SYN_ACK } from '../../../scripts/lib/fixtures.ts';

function parsed(bytes: Uint8Array): ParsedPacket {
  const packet = new ParsedPacket();
  assert.ok(parsePacket(bytes, 0, bytes.length, packet), packet.status);
  return packet;
}

/** Whether the TCP checksum holds: pseudo-header and segment, checksum field included, sum to all ones. */
function tcpChecksumHolds(packet: ParsedPacket): boolean {
  const tcpLength = packet.length - (packet.tcpOffset - packet.start);
  let acc = sumWords(packet.buf, packet.sourceOffset, packet.sourceOffset + 2 * packet.addressLength, 0);
  acc += 6 + tcpLength;
  return finishChecksum(sumWords(packet.buf, packet.tcpOffset, packet.tcpOffset + tcpLength, acc)) === 0;
}

for (const [family, syn, synAck] of [
  ['IPv4', IPV4_SYN, IPV4_SYN_ACK],
  ['IPv6', IPV6_SYN, IPV6_SYN_ACK],
] as const) {
  it(`${family}: the reset for a refused SYN-ACK is the client's, at the sequence number the server expects next, with valid checksums`, () => {
    const out = new Uint8Array(SERVER_RESET_MAX_BYTES);
    const length = buildServerReset(parsed(synAck), out);
    const reset = parsed(out.subarray(0, length));
    const client = parsed(syn);
    assert.equal(reset.ipVersion, client.ipVersion);
    assert.deepEqual(reset.buf.subarray(reset.sourceOffset, reset.sourceOffset + 2 * reset.addressLength), client.buf.subarray(client.sourceOffset, client.sourceOffset + 2 * client.addressLength));
    assert.deepEqual([reset.sourcePort, reset.destinationPort], [client.sourcePort, client.destinationPort]);
    assert.equal(reset.sequence, (client.sequence + 1) >>> 0);
    assert.equal(reset.flags, TCP_RST);
    assert.equal(reset.payloadLength, 0);
    assert.ok(tcpChecksumHolds(reset), 'TCP checksum');
    if (family === 'IPv4') assert.equal(finishChecksum(sumWords(out, 0, 20, 0)), 0, 'IPv4 header checksum');
  });
}

it('a reset leaves no byte of an earlier, longer one behind', () => {
  const out = new Uint8Array(SERVER_RESET_MAX_BYTES).fill(0xff);
  const length = buildServerReset(parsed(IPV4_SYN_ACK), out);
  const again = new Uint8Array(SERVER_RESET_MAX_BYTES);
  buildServerReset(parsed(IPV4_SYN_ACK), again);
  assert.deepEqual(out.subarray(0, length), again.subarray(0, length));
});
