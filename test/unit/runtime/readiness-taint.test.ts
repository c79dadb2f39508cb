// The agent takes the readiness taint off its node through a real HTTP server that applies JSON
// patches as the API server does (a failed `test` answers 422).
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ReadinessTaint, taintRemoval } from '../../../agent/src/runtime/readiness-taint.ts';
import { serveFakeKubeApi, type FakeKubeApi } from '../../../scripts/lib/fake-kube-api.ts';

const KEY = 'synpass.io/agent-not-ready';
const ours = { key: KEY, value: 'true', effect: 'NoExecute' };
const other = { key: 'node.kubernetes.io/not-ready', effect: 'NoSchedule' };

describe('readiness taint', () => {
  const servers: FakeKubeApi[] = [];
  after(() => {
    for (const api of servers) api.server.close();
  });
  const serve = async (taints: object[]) => {
    const api = await serveFakeKubeApi([], [{ metadata: { name: 'node-1' }, spec: { taints } }]);
    servers.push(api);
    return api;
  };
  const remover = (api: FakeKubeApi, errors: Error[] = []) =>
    new ReadinessTaint({ access: { server: api.url, tokenFile: null, ca: null }, nodeName: 'node-1', key: KEY, onError: (error) => errors.push(error), backoffMs: 10 });

  it('removes every taint with its key, last first, each guarded by a test of what was read', () => {
    const second = { ...ours, effect: 'NoSchedule' };
    assert.deepEqual(taintRemoval([ours, other, second], KEY), [
      { op: 'test', path: '/spec/taints/2', value: second },
      { op: 'remove', path: '/spec/taints/2' },
      { op: 'test', path: '/spec/taints/0', value: ours },
      { op: 'remove', path: '/spec/taints/0' },
    ]);
    assert.deepEqual(taintRemoval([other], KEY), []);
  });

  it('takes its taint off the node and leaves the others', async () => {
    const api = await serve([other, ours]);
    const taint = remover(api);
    assert.equal(taint.status.state, 'removing');
    await taint.remove();
    assert.deepEqual(api.nodes.get('node-1')?.spec?.taints, [other]);
    assert.deepEqual(taint.status, { key: KEY, state: 'removed', attempts: 1 });
    assert.deepEqual(api.requests, ['GET /api/v1/nodes/node-1', 'PATCH /api/v1/nodes/node-1']);
  });

  it('patches nothing on a node without the taint', async () => {
    const api = await serve([other]);
    const taint = remover(api);
    await taint.remove();
    assert.equal(taint.status.state, 'absent');
    assert.deepEqual(api.requests, ['GET /api/v1/nodes/node-1']);
  });

  it('reads again when someone edited the taints between its read and its patch, and removes no one else\'s', async () => {
    const api = await serve([ours]);
    const added = { key: 'example.com/maintenance', effect: 'NoSchedule' };
    api.beforePatch = (node) => node.spec?.taints?.unshift(added);
    const errors: Error[] = [];
    const taint = remover(api, errors);
    await taint.remove();
    assert.deepEqual(api.nodes.get('node-1')?.spec?.taints, [added]);
    assert.equal(taint.status.state, 'removed');
    assert.equal(taint.status.attempts, 2);
    assert.match(errors[0]?.message ?? '', /PATCH \/api\/v1\/nodes\/node-1: HTTP 422/);
  });

  it('retries while the API refuses (no RBAC yet), reporting each refusal, until it can', async () => {
    const api = await serve([ours]);
    api.failNext.push(403, 403);
    const errors: Error[] = [];
    const taint = remover(api, errors);
    await taint.remove();
    assert.deepEqual(errors.map((error) => error.message), ['GET /api/v1/nodes/node-1: HTTP 403', 'GET /api/v1/nodes/node-1: HTTP 403']);
    assert.deepEqual(taint.status, { key: KEY, state: 'removed', attempts: 3 });
    assert.deepEqual(api.nodes.get('node-1')?.spec?.taints, []);
  });

  it('stops retrying when the agent stops', async () => {
    const api = await serve([ours]);
    api.failNext.push(...Array<number>(1000).fill(500));
    const errors: Error[] = [];
    const taint = remover(api, errors);
    const done = taint.remove();
    while (errors.length < 2) await new Promise((resolve) => setTimeout(resolve, 5));
    taint.stop();
    await done;
    const attempts = taint.status.attempts;
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(taint.status.attempts, attempts, 'no attempt after stop');
    assert.equal(taint.status.state, 'removing');
    assert.match(taint.status.lastError ?? '', /HTTP 500/);
  });
});
