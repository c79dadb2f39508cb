// A connection that a NAT on this host translates has other addresses in its socket, and so in a
// whois question, than in the handshake the agent judged and filed (a local service address's
// DNAT, a source NAT of the host's own connections, a PREROUTING redirect to a local listener).
// Conntrack holds both; this turns a socket's ends into the handshake's.
import { formatAddress } from '../datapath/addresses.ts';
import { addressKey } from '../kernel/layouts.ts';
import type { ConntrackTuple } from '../native/addon.ts';

/** A connection's two ends, "address:port" as /proc/net/tcp and the registry give them. */
export interface ConnectionEnds {
  local: string;
  remote: string;
}

/** The conntrack entry with the tuple as one of its two directions; null if none. */
export type ConntrackLookup = (
  family: 4 | 6,
  source: Uint8Array,
  sourcePort: number,
  destination: Uint8Array,
  destinationPort: number,
) => { original: ConntrackTuple; reply: ConntrackTuple } | null;

interface Endpoint {
  family: 4 | 6;
  address: Uint8Array;
  port: number;
}

/** An end as /proc/net/tcp gives it (so always well formed), as conntrack takes it. */
function parseEndpoint(text: string): Endpoint {
  const at = text.lastIndexOf(':');
  const host = text.slice(0, at);
  const address = addressKey(host);
  const port = Number(text.slice(at + 1));
  return host.includes(':') ? { family: 6, address, port } : { family: 4, address: address.subarray(12), port };
}

function endpointText(address: Uint8Array, port: number): string {
  return `${formatAddress(address, 0, address.length)}:${port}`;
}

/**
 * The ends the agent saw in the handshake of the socket's connection, where conntrack shows that
 * a NAT on this host changed them; null where it did not, or where conntrack has no entry (the
 * kernel fast path leaves its connections out of conntrack where no NAT needs them). A socket
 * that connected is its entry's original direction, and the handshake's answer came in as the
 * reply direction shows it, before conntrack undid the NAT. A socket that accepted is the reply
 * direction, and its SYN came in as the original shows it, before the DNAT.
 */
export function handshakeEnds(socket: ConnectionEnds, lookup: ConntrackLookup): ConnectionEnds | null {
  const local = parseEndpoint(socket.local);
  const remote = parseEndpoint(socket.remote);
  if (local.family !== remote.family) return null;
  const entry = lookup(local.family, local.address, local.port, remote.address, remote.port);
  if (entry === null) return null;
  const isSocket = (tuple: ConntrackTuple) =>
    endpointText(tuple.source, tuple.sourcePort) === socket.local && endpointText(tuple.destination, tuple.destinationPort) === socket.remote;
  // What came in: the answer to a socket that connected, the SYN to one that accepted.
  const incoming = isSocket(entry.original) ? entry.reply : isSocket(entry.reply) ? entry.original : null;
  if (incoming === null) return null;
  const seen = { local: endpointText(incoming.destination, incoming.destinationPort), remote: endpointText(incoming.source, incoming.sourcePort) };
  return seen.local !== socket.local || seen.remote !== socket.remote ? seen : null;
}
