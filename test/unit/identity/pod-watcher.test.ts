// The pod attestor against a real HTTP server that speaks the Kubernetes list/watch protocol:
// list, watch with bookmarks, 410 Gone, server errors, a token the kubelet replaced.
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { scratchDirectory } from '../../../scripts/lib/scratch.ts';
import { PodWatcher } from '../../../agent/src/identity/kubernetes/pod-watcher.ts';

function pod(name: string, ip: string, labels: Record<string, string>, resourceVersion: string, extra: object = {}) {
  return {
    metadata: {
      name,
      namespace: 'shop',
      resourceVersion,
      labels,
      ownerReferences: [{ kind: 'ReplicaSet', name: `${name}-rs`, controller: true }],
    },
    spec: { nodeName: 'node-1', serviceAccountName: name },
    status: { phase: 'Running', podIP: ip, podIPs: [{ ip }], containerStatuses: [{ imageID: `registry/app@sha256:${'a'.repeat(64)}` }] },
    ...extra,
  };
}

it('lists, follows the watch with bookmarks, re-lists after 410 Gone and backs off on errors, each time with the token file as it is then', async () => {
  const directory = scratchDirectory('pod-watcher');
  const tokenFile = join(directory, 'token');
  writeFileSync(tokenFile, 'token-1\n');
  const authorizations: string[] = [];
  const requests: string[] = [];
  let watchCount = 0;
  let listCount = 0;
  const line = (res: ServerResponse, event: object) => res.write(`${JSON.stringify(event)}\n`);
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    requests.push(url.search);
    authorizations.push(req.headers.authorization ?? '');
    assert.equal(url.searchParams.get('fieldSelector'), 'spec.nodeName=node-1');
    if (url.searchParams.get('watch') !== '1') {
      listCount += 1;
      if (listCount === 2) {
        // One failure on the way back: the watcher must back off and list again.
        res.writeHead(500).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      const items = listCount === 1 ? [pod('web', '10.1.0.5', { app: 'web' }, '10')] : [pod('api', '10.1.0.9', { app: 'api' }, '90')];
      res.end(JSON.stringify({ kind: 'PodList', metadata: { resourceVersion: listCount === 1 ? '100' : '300' }, items }));
      return;
    }
    watchCount += 1;
    res.writeHead(200, { 'content-type': 'application/json' });
    if (watchCount === 1) {
      // The kubelet replaces the projected token: every later request must carry the new one.
      writeFileSync(tokenFile, 'token-2\n');
      assert.equal(url.searchParams.get('resourceVersion'), '100');
      assert.equal(url.searchParams.get('allowWatchBookmarks'), 'true');
      line(res, { type: 'ADDED', object: pod('db', '10.1.0.7', { app: 'db', 'app.kubernetes.io/Name': 'x' }, '101') });
      line(res, { type: 'MODIFIED', object: pod('web', '10.1.0.5', { app: 'web', tier: 'frontend' }, '102') });
      line(res, { type: 'BOOKMARK', object: { metadata: { resourceVersion: '150' } } });
      res.end();
    } else if (watchCount === 2) {
      // Resumed from the bookmark, then told the history is gone.
      assert.equal(url.searchParams.get('resourceVersion'), '150');
      line(res, { type: 'DELETED', object: pod('db', '10.1.0.7', {}, '151') });
      line(res, { type: 'ERROR', object: { kind: 'Status', code: 410, reason: 'Expired' } });
      res.end();
    } else {
      res.write('');
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const errors: string[] = [];
  const watcher = new PodWatcher({
    access: { server: `http://127.0.0.1:${port}`, tokenFile, ca: null },
    nodeName: 'node-1',
    backoffMs: 20,
    onError: (error) => errors.push(error.message),
  });
  try {
    await watcher.start();
    const deadline = Date.now() + 5_000;
    while (watcher.lists < 2 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(watcher.lists, 2, 'listed again after 410 Gone');
    assert.deepEqual(errors, ['GET /api/v1/pods: HTTP 500']);
    // After the re-list only the listed pod is known.
    assert.equal(watcher.attributesOf('10.1.0.5'), undefined);
    assert.equal(watcher.attributesOf('10.1.0.7'), undefined);
    const api = watcher.attributesOf('10.1.0.9')!;
    assert.equal(api.get('k8s.pod')?.value, 'api');
    assert.equal(api.get('k8s.namespace')?.value, 'shop');
    assert.equal(api.get('k8s.service-account')?.value, 'api');
    assert.equal(api.get('k8s.owner-kind')?.value, 'ReplicaSet');
    assert.equal(api.get('k8s.label.app')?.value, 'api');
    assert.equal(api.get('k8s.image-digests')?.value, `sha256:${'a'.repeat(64)}`);
    assert.equal(api.get('k8s.node')?.attestor, 'k8s');
    assert.equal(watcher.resourceVersion, '300');
    assert.ok(watchCount >= 3);
    assert.deepEqual(authorizations.slice(0, 2), ['Bearer token-1', 'Bearer token-1']);
    assert.ok(authorizations.length > 2 && authorizations.slice(2).every((value) => value === 'Bearer token-2'), authorizations.join(', '));
  } finally {
    watcher.stop();
    server.closeAllConnections();
    server.close();
    rmSync(directory, { recursive: true, force: true });
  }
});

it('applies watch events in between: added, modified, deleted, bookmark; pods on the host network are left to the node', async () => {
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    res.writeHead(200, { 'content-type': 'application/json' });
    if (url.searchParams.get('watch') !== '1') {
      res.end(JSON.stringify({ metadata: { resourceVersion: '1' }, items: [pod('web', '10.1.0.5', { app: 'web' }, '1')] }));
      return;
    }
    res.write(`${JSON.stringify({ type: 'ADDED', object: pod('db', '10.1.0.7', { app: 'db', 'Bad/Key': 'x' }, '2') })}\n`);
    res.write(`${JSON.stringify({ type: 'MODIFIED', object: pod('web', '10.1.0.5', { app: 'web', tier: 'frontend' }, '3') })}\n`);
    // Dual stack: the API server writes IPv6 compressed; packets name it in full.
    res.write(`${JSON.stringify({ type: 'ADDED', object: pod('dual', '10.1.0.11', { app: 'dual' }, '3', { status: { phase: 'Running', podIP: '10.1.0.11', podIPs: [{ ip: '10.1.0.11' }, { ip: 'fd00:10::b' }] } }) })}\n`);
    res.write(`${JSON.stringify({ type: 'DELETED', object: pod('gone', '10.1.0.8', {}, '4') })}\n`);
    // A terminating pod's address given to a new pod before the old one is gone: the new one keeps it.
    res.write(`${JSON.stringify({ type: 'ADDED', object: pod('old', '10.1.0.20', { app: 'old' }, '4') })}\n`);
    res.write(`${JSON.stringify({ type: 'ADDED', object: pod('new', '10.1.0.20', { app: 'new' }, '4') })}\n`);
    res.write(`${JSON.stringify({ type: 'DELETED', object: pod('old', '10.1.0.20', { app: 'old' }, '5') })}\n`);
    // Two pods on the host's network, with the node's address: neither is a pod address.
    for (const name of ['kube-proxy', 'cni-agent']) res.write(`${JSON.stringify({ type: 'ADDED', object: pod(name, '10.1.0.1', { app: name }, '5', { spec: { nodeName: 'node-1', serviceAccountName: name, hostNetwork: true } }) })}\n`);
    res.write(`${JSON.stringify({ type: 'BOOKMARK', object: { metadata: { resourceVersion: '9' } } })}\n`);
    // Keep the stream open like an API server would.
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const watcher = new PodWatcher({ access: { server: `http://127.0.0.1:${port}`, tokenFile: null, ca: null }, nodeName: 'node-1' });
  try {
    await watcher.start();
    const deadline = Date.now() + 5_000;
    while (watcher.resourceVersion !== '9' && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(watcher.resourceVersion, '9');
    assert.equal(watcher.podCount, 4);
    assert.equal(watcher.attributesOf('10.1.0.20')?.get('k8s.label.app')?.value, 'new', 'the old pod\'s deletion left the new pod its address');
    assert.equal(watcher.attributesOf('10.1.0.1'), undefined, 'a pod on the host network is the node');
    assert.equal(watcher.attributesOf('10.1.0.5')?.get('k8s.label.tier')?.value, 'frontend');
    assert.equal(watcher.attributesOf('fd00:10:0:0:0:0:0:b')?.get('k8s.label.app')?.value, 'dual');
    assert.equal(watcher.attributesOf('10.1.0.11'), watcher.attributesOf('fd00:10:0:0:0:0:0:b'));
    const db = watcher.attributesOf('10.1.0.7')!;
    assert.equal(db.get('k8s.label.app')?.value, 'db');
    assert.equal([...db.keys()].some((key) => key.includes('Bad')), false, 'label keys that are not attribute names are left out');
  } finally {
    watcher.stop();
    server.closeAllConnections();
    server.close();
  }
});
