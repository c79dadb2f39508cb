// A small Kubernetes API stand-in for tests: serves GET /api/v1/pods (list, filtered by
// spec.nodeName) and a watch that stays open and carries the events a test sends, and GET and
// JSON-patch PATCH of /api/v1/nodes/NAME (a failed `test` answers 422, as the API server does).
// Run as a script it serves a JSON file of pods and, optionally, one of nodes, prints
// {"listening":port}, and sends each line of its stdin (a watch event) to the open watches.
import { createInterface } from 'node:readline';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pathToFileURL } from 'node:url';
import fastJsonPatch, { type Operation } from 'fast-json-patch';

interface FakeNode {
  metadata: { name: string };
  spec?: { taints?: object[] };
}

export interface FakeKubeApi {
  server: Server;
  url: string;
  nodes: Map<string, FakeNode>;
  /** Requests as "METHOD path", in order. */
  requests: string[];
  /** Answers the next requests with these statuses instead, one each. */
  failNext: number[];
  /** Runs between a node's GET and the PATCH after it, as a concurrent writer would. */
  beforePatch: ((node: FakeNode) => void) | null;
  /** Sends a watch event ({type, object}) to every open pod watch. */
  emit(event: { type: string; object: object }): void;
}

async function body(req: IncomingMessage): Promise<string> {
  let text = '';
  for await (const chunk of req) text += String(chunk);
  return text;
}

export async function serveFakeKubeApi(pods: { spec: { nodeName: string } }[], nodes: FakeNode[], port = 0): Promise<FakeKubeApi> {
  const watches = new Set<ServerResponse>();
  const emit = (event: { type: string; object: object }): void => {
    for (const watch of watches) watch.write(`${JSON.stringify(event)}\n`);
  };
  const api: Partial<FakeKubeApi> & Omit<FakeKubeApi, 'server' | 'url'> = { nodes: new Map(nodes.map((node) => [node.metadata.name, node])), requests: [], failNext: [], beforePatch: null, emit };
  const status = (code: number) => ({ kind: 'Status', code });
  const nodeAnswer = async (req: IncomingMessage, name: string): Promise<[number, unknown]> => {
    const node = api.nodes.get(name);
    if (node === undefined) return [404, status(404)];
    if (req.method === 'GET') {
      const answer: [number, unknown] = [200, structuredClone(node)];
      api.beforePatch?.(node);
      api.beforePatch = null;
      return answer;
    }
    if (req.method !== 'PATCH' || req.headers['content-type'] !== 'application/json-patch+json') return [415, status(415)];
    try {
      const patched = fastJsonPatch.applyPatch(structuredClone(node), JSON.parse(await body(req)) as Operation[], true).newDocument;
      api.nodes.set(name, patched);
      return [200, patched];
    } catch {
      return [422, { ...status(422), reason: 'Invalid' }];
    }
  };
  const answer = async (req: IncomingMessage, url: URL): Promise<[number, unknown]> => {
    const failure = api.failNext.shift();
    if (failure !== undefined) return [failure, status(failure)];
    const nodeName = /^\/api\/v1\/nodes\/([^/]+)$/.exec(url.pathname)?.[1];
    if (nodeName !== undefined) return nodeAnswer(req, decodeURIComponent(nodeName));
    if (url.pathname !== '/api/v1/pods') return [404, status(404)];
    const node = (url.searchParams.get('fieldSelector') ?? '').replace('spec.nodeName=', '');
    return [200, { kind: 'PodList', metadata: { resourceVersion: '1' }, items: pods.filter((p) => p.spec.nodeName === node) }];
  };
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    api.requests.push(`${req.method ?? ''} ${url.pathname}`);
    if (url.pathname === '/api/v1/pods' && url.searchParams.get('watch') === '1') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write(`${JSON.stringify({ type: 'BOOKMARK', object: { metadata: { resourceVersion: '2' } } })}\n`);
      watches.add(res);
      res.on('close', () => watches.delete(res));
      return; // held open, as a real watch is
    }
    void answer(req, url).then(([code, value]) => res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify(value)));
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  api.server = server;
  api.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return api as FakeKubeApi;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const [podsFile, portText, nodesFile] = process.argv.slice(2);
  const read = (file: string | undefined) => (file === undefined ? [] : (JSON.parse(readFileSync(file, 'utf8')) as never[]));
  const api = await serveFakeKubeApi(read(podsFile), read(nodesFile), Number(portText ?? 0));
  process.stdout.write(`${JSON.stringify({ listening: (api.server.address() as AddressInfo).port })}\n`);
  for await (const line of createInterface({ input: process.stdin })) {
    if (line.trim() !== '') api.emit(JSON.parse(line) as { type: string; object: object });
  }
}
