// The agent's network endpoint for Prometheus and probes: /metrics, /healthz (the process
// answers), /readyz (200 only when every readiness check passes; the body says which failed).
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { Server as NetServer } from 'node:net';
import type { Registry } from 'prom-client';

export interface Readiness {
  ready: boolean;
  checks: Record<string, { ok: boolean; detail: string }>;
}

export function writeJson(response: ServerResponse, status: number, body: unknown): void {
  response.writeHead(status, { 'content-type': 'application/json' });
  response.end(JSON.stringify(body));
}

/** Answers a Prometheus scrape with the registry's metrics (the agent's and the issuer's endpoints). */
export function serveMetrics(registry: Registry, response: ServerResponse): void {
  registry.metrics().then(
    (text) => {
      response.writeHead(200, { 'content-type': registry.contentType });
      response.end(text);
    },
    (error: unknown) => {
      writeJson(response, 500, { error: (error as Error).message });
    },
  );
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
    if (request.method !== 'GET') {
      writeJson(response, 405, { error: 'method-not-allowed' });
      return;
    }
    if (request.url === '/metrics') {
      serveMetrics(registry, response);
      return;
    }
    if (request.url === '/healthz') {
      writeJson(response, 200, { alive: true });
      return;
    }
    if (request.url === '/readyz') {
      const state = readiness();
      writeJson(response, state.ready ? 200 : 503, state);
      return;
    }
    writeJson(response, 404, { error: 'not-found' });
  });
  await listenAt(server, address);
  return server;
}
