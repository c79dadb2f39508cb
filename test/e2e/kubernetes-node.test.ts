// A Kubernetes-style node in the lab: a "node" namespace routes for three "pod" namespaces over
// veth pairs (no bridge, as Calico does), one agent runs in the node namespace and learns the
// pods from a stand-in API server. Pod A may reach pod B's service; pod C is cloaked from it.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { initDomain, issueAgent } from '../../agent/src/identity/issuance.ts';
import { isRoot, NetnsProcess, readStatus, ROOT } from '../support/lab.ts';

const CLI = join(ROOT, 'agent/src/cli/main.ts');
const PEER = join(ROOT, 'test/support/peer.ts');
const API = join(ROOT, 'test/support/fake-kube-api.ts');

describe('kubernetes node with pods', { skip: !isRoot() && 'needs root for network namespaces' }, () => {
  const prefix = `kn${process.pid % 100000}`;
  const node = `${prefix}-node`;
  const pods = { a: `${prefix}-pa`, b: `${prefix}-pb`, c: `${prefix}-pc` };
  const address = { a: '10.215.1.1', b: '10.215.1.2', c: '10.215.1.3' };
  const processes: NetnsProcess[] = [];
  let directory = '';
  let socket: string;
  let agent: NetnsProcess;
  const ip = (...args: string[]) => execFileSync('ip', args, { stdio: 'pipe' });
  const spawn = (ns: string, args: string[]) => {
    const child = new NetnsProcess(ns, [process.execPath, '--import', 'tsx', ...args]);
    processes.push(child);
    return child;
  };

  before(async () => {
    ip('netns', 'add', node);
    ip('-n', node, 'link', 'set', 'lo', 'up');
    // The pods' gateway address; the node answers ARP for it on every pod link.
    ip('-n', node, 'addr', 'add', '169.254.1.1/32', 'dev', 'lo');
    execFileSync('ip', ['netns', 'exec', node, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    for (const [name, ns] of Object.entries(pods) as ['a' | 'b' | 'c', string][]) {
      ip('netns', 'add', ns);
      ip('-n', ns, 'link', 'set', 'lo', 'up');
      ip('-n', ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', `cali${name}`, 'netns', node);
      ip('-n', ns, 'addr', 'add', `${address[name]}/32`, 'dev', 'eth0');
      ip('-n', ns, 'link', 'set', 'eth0', 'up');
      ip('-n', ns, 'route', 'add', '169.254.1.1', 'dev', 'eth0', 'scope', 'link');
      ip('-n', ns, 'route', 'add', 'default', 'via', '169.254.1.1', 'dev', 'eth0');
      ip('-n', node, 'link', 'set', `cali${name}`, 'up');
      execFileSync('ip', ['netns', 'exec', node, 'sysctl', '-qw', `net.ipv4.conf.cali${name}.proxy_arp=1`]);
      ip('-n', node, 'route', 'add', `${address[name]}/32`, 'dev', `cali${name}`);
    }

    directory = mkdtempSync(join(tmpdir(), 'synpass-k8s-'));
    await initDomain('cluster.synpass', join(directory, 'domain'));
    await issueAgent({ domainDirectory: join(directory, 'domain'), trustDomain: 'cluster.synpass', agentId: 'node-1', namespaces: ['k8s', 'host'], ttlSeconds: 3600, outputDirectory: join(directory, 'agent') });
    const pod = (name: string, ip: string, app: string) => ({
      metadata: { name, namespace: 'shop', resourceVersion: '1', labels: { app } },
      spec: { nodeName: 'node-1', serviceAccountName: app },
      status: { phase: 'Running', podIP: ip, podIPs: [{ ip }] },
    });
    writeFileSync(join(directory, 'pods.json'), JSON.stringify([pod('a-1', address.a, 'a'), pod('b-1', address.b, 'b'), pod('c-1', address.c, 'c')]));
    const kubeApi = spawn(node, [API, join(directory, 'pods.json'), '0']);
    const port = (await kubeApi.waitFor((l) => typeof l.listening === 'number')).listening as number;
    mkdirSync(join(directory, 'policy'));
    writeFileSync(
      join(directory, 'policy', 'shop.yaml'),
      stringify({
        policies: [{ name: 'b', selector: { 'k8s.label.app': 'b' }, ingress: [{ name: 'from-a', action: 'allow', from: { 'k8s.label.app': 'a' }, ports: [8080] }] }],
      }),
    );
    writeFileSync(
      join(directory, 'agent.yaml'),
      stringify({
        mode: 'identity',
        identity: {
          subject: 'spiffe://cluster.synpass/node/node-1',
          credential: join(directory, 'agent/credential.jwt'),
          signingKey: join(directory, 'agent/sign.key.pem'),
          keyAgreementKey: join(directory, 'agent/kex.key.pem'),
          trustBundles: join(directory, 'domain'),
        },
        kubernetes: { nodeName: 'node-1', apiServer: `http://127.0.0.1:${port}` },
        policy: { directory: join(directory, 'policy'), watch: false },
        telemetry: { whoisSocket: join(directory, 'whois.sock') },
      }),
    );
    socket = join(directory, 'status.sock');
    agent = spawn(node, [CLI, 'agent', 'run', '--config', join(directory, 'agent.yaml'), '--status-socket', socket]);
    await agent.waitFor((l) => l.msg === 'agent running', 20_000);
    await spawn(pods.b, [PEER, 'server', '8080', 'http']).waitFor((l) => l.listening === 8080);
  });

  after(async () => {
    await Promise.all(processes.map((child) => child.stop('SIGKILL', 2_000)));
    for (const ns of [node, ...Object.values(pods)]) {
      try {
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
      } catch {
        // never created: before() failed early
      }
    }
    if (directory) rmSync(directory, { recursive: true, force: true });
  });

  async function request(from: 'a' | 'c'): Promise<Record<string, unknown> | null> {
    const child = spawn(pods[from], [PEER, 'http', address.b, '8080']);
    try {
      return await child.waitFor(() => true, 4_000);
    } catch {
      return null;
    }
  }

  it('the agent learned the pods from the API server', () => {
    const listed = agent.lines.find((l) => l.msg === 'kubernetes pods listed');
    assert.equal(listed?.pods, 3);
  });

  it('pod A reaches pod B through the node; the verdict names both pod identities and the rule', async () => {
    const response = await request('a');
    assert.equal(response?.status, 200);
    const verdict = await agent.waitFor((l) => l.event === 'handshake' && l.verdict === 'accept' && l.reason === 'ok-local');
    assert.equal((verdict.peer as { subject: string }).subject, 'spiffe://cluster.synpass/ns/shop/sa/a');
    assert.equal((verdict.local as { subject: string }).subject, 'spiffe://cluster.synpass/ns/shop/sa/b');
    assert.equal(verdict.rule, 'b/from-a');
  });

  it('pod C is cloaked from pod B: no answer, a drop under not-allowed', async () => {
    assert.equal(await request('c'), null);
    const verdict = await agent.waitFor((l) => l.event === 'handshake' && l.verdict === 'drop');
    assert.equal(verdict.reason, 'not-allowed');
    assert.equal((verdict.peer as { attributes: Record<string, string> }).attributes['k8s.label.app'], 'c');
    const status = await readStatus(socket);
    assert.ok((status.verdicts.find((v) => v.reason === 'not-allowed' && v.action === 'drop')?.count ?? 0) >= 1);
  });
});
