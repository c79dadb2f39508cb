// The peer-identity API: a unix socket, one JSON request per line,
//   {"a":"10.0.0.2:8080","b":"10.0.0.1:40000"}  (the connection's two ends, either order)
// answered with {"found":true,"local":...,"remote":...,"identity":{...}} or {"error":...}.
// Only the owner of the connection (socket credentials against /proc/net/tcp) or root may ask.
import { createServer, type Server, type Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { canonicalAddress } from '../datapath/addresses.ts';
import type { PeerCredentials } from '../native/addon.ts';
import type { Logger } from '../telemetry/log.ts';
import { listenOnUnixSocket } from '../telemetry/unix-socket.ts';
import { liveTcpSockets, type TcpSocket } from './proc-net-tcp.ts';
import type { PeerRegistry } from './registry.ts';
import { handshakeEnds, type ConntrackLookup } from './translation.ts';

export interface WhoisDependencies {
  registry: PeerRegistry;
  credentialsOf(socket: Socket): PeerCredentials;
  sockets?: () => TcpSocket[];
  /** Finds a connection that a NAT on this host translates (null: only as its socket shows it). */
  conntrack?: ConntrackLookup | null;
}

export type WhoisAnswer =
  | { found: true; local: string; remote: string; identity: unknown }
  | { error: 'bad-request' | 'not-found' | 'forbidden'; detail: string };

/** "addr:port" or "[v6]:port" in the form /proc/net/tcp and the packet parser give. */
function normalise(endpoint: string): string | null {
  const match = /^\[?([0-9a-fA-F:.]+)\]?:(\d{1,5})$/.exec(endpoint.trim());
  if (!match) return null;
  return `${canonicalAddress(match[1]!)}:${Number(match[2])}`;
}

export function answerWhois(request: unknown, caller: PeerCredentials, registry: PeerRegistry, sockets: TcpSocket[], conntrack: ConntrackLookup | null = null): WhoisAnswer {
  const body = request as { a?: unknown; b?: unknown } | null;
  const a = typeof body?.a === 'string' ? normalise(body.a) : null;
  const b = typeof body?.b === 'string' ? normalise(body.b) : null;
  if (a === null || b === null) return { error: 'bad-request', detail: 'expected {"a":"ADDR:PORT","b":"ADDR:PORT"}' };
  const socket = sockets.find((s) => (s.local === a && s.remote === b) || (s.local === b && s.remote === a));
  if (socket === undefined) return { error: 'not-found', detail: 'no such connection on this host' };
  if (caller.uid !== 0 && caller.uid !== socket.uid) return { error: 'forbidden', detail: 'only the owner of the connection (or root) may ask' };
  let identity = registry.get(socket.local, socket.remote);
  if (identity === undefined && conntrack !== null) {
    const seen = handshakeEnds(socket, conntrack);
    if (seen !== null) identity = registry.get(seen.local, seen.remote);
  }
  if (identity === undefined) return { error: 'not-found', detail: 'no verified identity for this connection' };
  return { found: true, local: socket.local, remote: socket.remote, identity };
}

export async function startWhoisServer(path: string, dependencies: WhoisDependencies, log: Logger): Promise<Server> {
  const sockets = dependencies.sockets ?? liveTcpSockets;
  const server = createServer((connection) => {
    let caller: PeerCredentials;
    try {
      caller = dependencies.credentialsOf(connection);
    } catch (error) {
      log.warn({ err: error }, 'whois: caller credentials unavailable');
      connection.destroy();
      return;
    }
    connection.on('error', () => undefined);
    const lines = createInterface({ input: connection, crlfDelay: Infinity });
    lines.on('line', (line) => {
      let request: unknown = null;
      try {
        request = JSON.parse(line);
      } catch {
        // answered as a bad request below
      }
      const live = sockets();
      // Forget identities of connections that are gone, so the registry never answers for a
      // reused 4-tuple.
      dependencies.registry.retain(live);
      connection.write(`${JSON.stringify(answerWhois(request, caller, dependencies.registry, live, dependencies.conntrack ?? null))}\n`);
    });
  });
  // Any local user may ask; the answer depends on who asks.
  await listenOnUnixSocket(server, path, 0o666);
  return server;
}
