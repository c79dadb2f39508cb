// The peer-identity API: a unix socket, one JSON request per line,
//   {"a":"10.0.0.2:8080","b":"10.0.0.1:40000"}  (the connection's two ends, either order)
// answered with {"found":true,"local":...,"remote":...,"identity":{...}} or {"error":...}.
// Only the owner of the connection (socket credentials against /proc/net/tcp) or root may ask.
import { createServer, type Server, type Socket } from 'node:net';
import { createInterface } from 'node:readline';
import type { PeerCredentials } from '../datapath/nfqueue.ts';
import type { Logger } from '../telemetry/log.ts';
import { listenOnUnixSocket } from '../telemetry/unix-socket.ts';
import { liveTcpSockets, type TcpSocket } from './proc-net-tcp.ts';
import { connectionKey, type PeerRegistry } from './registry.ts';

export interface WhoisDependencies {
  registry: PeerRegistry;
  credentialsOf(socket: Socket): PeerCredentials;
  sockets?: () => TcpSocket[];
}

export type WhoisAnswer =
  | { found: true; local: string; remote: string; identity: unknown }
  | { error: 'bad-request' | 'not-found' | 'forbidden'; detail: string };

/** Normalises "addr:port" / "[v6]:port" to the form /proc/net/tcp gives. */
function normalise(endpoint: string): string | null {
  const match = /^\[?([0-9a-fA-F:.]+)\]?:(\d{1,5})$/.exec(endpoint.trim());
  if (!match) return null;
  const address = match[1]!;
  const host = address.includes(':')
    ? address
        .split(':')
        .map((group) => (group === '' ? group : Number.parseInt(group, 16).toString(16)))
        .join(':')
    : address;
  return `${host}:${Number(match[2])}`;
}

function expandIpv6(endpoint: string): string {
  const colon = endpoint.lastIndexOf(':');
  const host = endpoint.slice(0, colon);
  if (!host.includes('::')) return endpoint;
  const [head, tail] = host.split('::') as [string, string];
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === '' ? [] : tail.split(':');
  const zeros = Array.from({ length: 8 - headGroups.length - tailGroups.length }, () => '0');
  return `${[...headGroups, ...zeros, ...tailGroups].join(':')}${endpoint.slice(colon)}`;
}

export function answerWhois(request: unknown, caller: PeerCredentials, registry: PeerRegistry, sockets: TcpSocket[]): WhoisAnswer {
  const body = request as { a?: unknown; b?: unknown } | null;
  const a = typeof body?.a === 'string' ? normalise(body.a) : null;
  const b = typeof body?.b === 'string' ? normalise(body.b) : null;
  if (a === null || b === null) return { error: 'bad-request', detail: 'expected {"a":"ADDR:PORT","b":"ADDR:PORT"}' };
  const [ea, eb] = [expandIpv6(a), expandIpv6(b)];
  const socket = sockets.find((s) => (s.local === ea && s.remote === eb) || (s.local === eb && s.remote === ea));
  if (socket === undefined) return { error: 'not-found', detail: 'no such connection on this host' };
  if (caller.uid !== 0 && caller.uid !== socket.uid) return { error: 'forbidden', detail: 'only the owner of the connection (or root) may ask' };
  const identity = registry.get(socket.local, socket.remote);
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
      dependencies.registry.retain(new Set(live.map((s) => connectionKey(s.local, s.remote))));
      connection.write(`${JSON.stringify(answerWhois(request, caller, dependencies.registry, live))}\n`);
    });
  });
  // Any local user may ask; the answer depends on who asks.
  await listenOnUnixSocket(server, path, 0o666);
  return server;
}
