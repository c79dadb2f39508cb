// A small Kubernetes API stand-in for lab tests: serves GET /api/v1/pods (list, filtered by
// spec.nodeName) and a watch that stays open, from a JSON file of pods. Prints {"listening":port}.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

const [podsFile, portText] = process.argv.slice(2);
const pods = JSON.parse(readFileSync(podsFile!, 'utf8')) as { spec: { nodeName: string } }[];

createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://x');
  if (url.pathname !== '/api/v1/pods') {
    res.writeHead(404).end();
    return;
  }
  const node = (url.searchParams.get('fieldSelector') ?? '').replace('spec.nodeName=', '');
  res.writeHead(200, { 'content-type': 'application/json' });
  if (url.searchParams.get('watch') === '1') {
    res.write(`${JSON.stringify({ type: 'BOOKMARK', object: { metadata: { resourceVersion: '2' } } })}\n`);
    return; // held open, as a real watch is
  }
  res.end(JSON.stringify({ kind: 'PodList', metadata: { resourceVersion: '1' }, items: pods.filter((p) => p.spec.nodeName === node) }));
}).listen(Number(portText ?? 0), '127.0.0.1', function (this: import('node:net').Server) {
  process.stdout.write(`${JSON.stringify({ listening: (this.address() as import('node:net').AddressInfo).port })}\n`);
});
