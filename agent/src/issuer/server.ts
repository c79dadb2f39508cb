// The issuer's HTTPS edge: POST /v1/credentials takes a credential request and answers with a
// credential or a refusal; /healthz and /metrics for probes and Prometheus. Every issuance and
// every refusal is one audit line. Each source (IPv4 address or IPv6 /64) has a request budget,
// and bodies, headers and slow clients are bounded, so a stranger costs counters.
import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Counter, Gauge, Registry } from 'prom-client';
import { SourceBudget } from '../handshake/source-budget.ts';
import { canonicalAddress } from '../datapath/addresses.ts';
import { listenAt, serveMetrics, writeJson } from '../telemetry/http-endpoint.ts';
import type { Logger } from '../telemetry/log.ts';
import type { Issuer } from './issuer.ts';
import { IssuanceRefusal, REFUSAL_REASONS } from './refusal.ts';

export const CREDENTIALS_PATH = '/v1/credentials';
const MAX_BODY_BYTES = 16 * 1024;
const TLS_POLL_MS = 10_000;

export interface IssuerServerOptions {
  /** host:port */
  listen: string;
  tlsCertificate: string;
  tlsKey: string;
  /** Requests a second per source; 0: unlimited. */
  ratePerSource: number;
  issuer: Issuer;
  log: Logger;
  clock?: () => number;
  /** How often the TLS files are checked for a renewed certificate (default 10 s). */
  tlsPollMs?: number;
}

export interface IssuerServer {
  server: Server;
  registry: Registry;
  close(): Promise<void>;
}

/** In the form the per-source budget keys by (IPv6: 8 groups, so its /64 is the first four). */
function sourceOf(request: IncomingMessage): string {
  const address = request.socket.remoteAddress ?? 'unknown';
  return canonicalAddress(address.startsWith('::ffff:') ? address.slice(7) : address);
}

function readBody(request: IncomingMessage): Promise<string | null> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    request.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        resolve(null);
        request.destroy();
        return;
      }
      chunks.push(chunk);
    });
    request.on('end', () => { resolve(Buffer.concat(chunks).toString('utf8')); });
    request.on('error', reject);
  });
}

function requestOf(body: string | null): string {
  if (body === null) throw new IssuanceRefusal('bad-request', `body over ${MAX_BODY_BYTES} bytes`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    throw new IssuanceRefusal('bad-request', 'body is not JSON');
  }
  const request = (parsed as { request?: unknown } | null)?.request;
  if (typeof request !== 'string') throw new IssuanceRefusal('bad-request', 'body must be {"request": "<compact JWS>"}');
  return request;
}

export async function startIssuerServer(options: IssuerServerOptions): Promise<IssuerServer> {
  const clock = options.clock ?? Date.now;
  const registry = new Registry();
  const requests = new Counter({
    name: 'synpass_issuer_requests_total',
    help: 'credential requests by result (issued, refused) and refusal reason',
    labelNames: ['result', 'reason'],
    registers: [registry],
  });
  requests.inc({ result: 'issued', reason: 'ok' }, 0);
  for (const reason of REFUSAL_REASONS) requests.inc({ result: 'refused', reason }, 0);
  const certificate = options.issuer.options.certificate;
  new Gauge({
    name: 'synpass_issuer_certificate_expiry_seconds',
    help: "seconds until the issuing key's certificate expires (renew it with `synpass keys certify-issuer` well before)",
    registers: [registry],
    collect() {
      this.set(certificate.expiresAt - clock() / 1000);
    },
  });
  const budget = new SourceBudget(options.ratePerSource);
  const audit = options.log.child({ component: 'issuer-audit' });

  const handleCredential = async (request: IncomingMessage, response: ServerResponse): Promise<void> => {
    const source = sourceOf(request);
    try {
      if (!budget.take(source, clock())) throw new IssuanceRefusal('rate-limited', `over ${options.ratePerSource} requests a second from this source`);
      const compact = requestOf(await readBody(request));
      const issued = await options.issuer.issue(compact, Math.floor(clock() / 1000));
      requests.inc({ result: 'issued', reason: 'ok' });
      audit.info({ audit: 'issued', source, subject: issued.subject, attestation: issued.attestation, key: issued.keyThumbprint, jti: issued.jti, expiresAt: new Date(issued.expiresAt * 1000).toISOString() }, 'credential issued');
      writeJson(response, 200, { credential: issued.credential });
    } catch (error) {
      if (!(error instanceof IssuanceRefusal)) {
        options.log.error({ err: error, source }, 'credential request failed');
        writeJson(response, 500, { error: 'internal' });
        return;
      }
      requests.inc({ result: 'refused', reason: error.code });
      audit.info({ audit: 'refused', source, reason: error.code, detail: error.message, ...error.context }, 'credential refused');
      writeJson(response, error.code === 'rate-limited' ? 429 : 403, { error: error.code, message: error.message });
    }
  };

  const tls = (): { cert: Buffer; key: Buffer } => ({ cert: readFileSync(options.tlsCertificate), key: readFileSync(options.tlsKey) });
  const server = createServer(
    {
      ...tls(),
      requestTimeout: 10_000,
      headersTimeout: 5_000,
      maxHeaderSize: 8 * 1024,
    },
    (request, response) => {
      if (request.method === 'POST' && request.url === CREDENTIALS_PATH) {
        void handleCredential(request, response);
        return;
      }
      if (request.method === 'GET' && request.url === '/healthz') {
        writeJson(response, 200, { alive: true, issuer: certificate.name });
        return;
      }
      if (request.method === 'GET' && request.url === '/metrics') {
        serveMetrics(registry, response);
        return;
      }
      writeJson(response, 404, { error: 'not-found' });
    },
  );
  await listenAt(server, options.listen);
  // A renewed certificate (cert-manager, a cron job) is taken without a restart; a broken pair is
  // reported and the served one stays.
  const reloadTls = (): void => {
    try {
      server.setSecureContext(tls());
      options.log.info({ certificate: options.tlsCertificate }, 'TLS certificate reloaded');
    } catch (error) {
      options.log.error({ err: error, certificate: options.tlsCertificate }, 'TLS certificate refused; the served one stays');
    }
  };
  for (const path of [options.tlsCertificate, options.tlsKey]) watchFile(path, { interval: options.tlsPollMs ?? TLS_POLL_MS, persistent: false }, reloadTls);
  return {
    server,
    registry,
    close: () =>
      new Promise((resolve) => {
        for (const path of [options.tlsCertificate, options.tlsKey]) unwatchFile(path, reloadTls);
        server.close(() => { resolve(); });
        server.closeAllConnections();
      }),
  };
}
