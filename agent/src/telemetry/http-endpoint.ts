// The agent's network endpoint for Prometheus and probes: /metrics, /healthz (the process
// answers), /readyz (200 only when every readiness check passes; the body says which failed).
import { createServer, type Server } from 'node:http';
import type { Server as NetServer } from 'node:net';
import type { Registry } from 'prom-client';

export interface Readiness {
  ready: boolean;
  checks: Record<string, { ok: boolean; detail: string }>;
}

/** Listens on `host:port` (IPv6 in brackets); rejects when the address cannot be bound. */
export async function listenAt(server: NetServer, address: string): Promise<void> {
  const colon = address.lastIndexOf(':');
  const host = address.slice(0, colon).replace(/^\[|\]$/g, '');
  const port = Number(address.slice(colon + 1));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      resolve();
    });
  });
}

export async function startHttpEndpoint(address: string, registry: Registry, readiness: () => Readiness): Promise<Server> {
  const server = createServer((request, response) => {
    const json = (status: number, body: unknown) => {
      response.writeHead(status, { 'content-type': 'application/json' });
      response.end(JSON.stringify(body));
    };
    if (request.method !== 'GET') {
      json(405, { error: 'method-not-allowed' });
      return;
    }
    if (request.url === '/metrics') {
      registry.metrics().then(
        (text) => {
          response.writeHead(200, { 'content-type': registry.contentType });
          response.end(text);
        },
        (error: unknown) => {
          json(500, { error: (error as Error).message });
        },
      );
      return;
    }
    if (request.url === '/healthz') {
      json(200, { alive: true });
      return;
    }
    if (request.url === '/readyz') {
      const state = readiness();
      json(state.ready ? 200 : 503, state);
      return;
    }
    json(404, { error: 'not-found' });
  });
  await listenAt(server, address);
  return server;
}
