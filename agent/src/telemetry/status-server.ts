// A small local HTTP endpoint on a unix socket: GET /status returns what the agent is doing.
// Filesystem permissions on the socket decide who may read it.
import { createServer, type Server } from 'node:http';
import { listenOnUnixSocket } from './unix-socket.ts';

export type StatusProvider = () => unknown;

export interface StatusActions {
  /** Forget verified peers, credentials and pair keys (after a revocation, or to measure first contact). */
  flushCaches(): void;
}

export async function startStatusServer(socketPath: string, status: StatusProvider, actions: StatusActions): Promise<Server> {
  const server = createServer((request, response) => {
    if (request.method === 'GET' && request.url === '/status') {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(JSON.stringify(status()));
      return;
    }
    if (request.method === 'POST' && request.url === '/caches/flush') {
      actions.flushCaches();
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(JSON.stringify({ flushed: true }));
      return;
    }
    response.writeHead(404, { 'content-type': 'application/json' });
    response.end(JSON.stringify({ error: 'not-found' }));
  });
  await listenOnUnixSocket(server, socketPath, 0o660);
  return server;
}
