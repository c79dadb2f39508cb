// A Kubernetes-style node in the lab: a "node" namespace routes for three "pod" namespaces over
// veth pairs (no bridge, as Calico does), one agent runs in the node namespace and learns the
// pods from a stand-in API server. Pod A may reach pod B's service; pod C is cloaked from it.
// A remote host with its own agent sees pod A's own identity on a connection through the node.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { initDomain, issueAgent } from '../../agent/src/identity/issuance.ts';
import { isRoot, NetnsProcess, readStatus, ROOT, synpassCommand } from '../../scripts/lib/lab.ts';
import { scratchDirectory } from '../../scripts/lib/scratch.ts';

const PEER = join(ROOT, 'scripts/lib/peer.ts');
const API = join(ROOT, 'test/support/fake-kube-api.ts');

describe('kubernetes node with pods', { skip: !isRoot() && 'needs root for network namespaces' }, () => {
  const prefix = `kn${process.pid % 100000}`;
  const node = `${prefix}-node`;
  const pods = { a: `${prefix}-pa`, b: `${prefix}-pb`, c: `${prefix}-pc` };
  const address = { a: '10.215.1.1', b: '10.215.1.2', c: '10.215.1.3' };
  const remote = `${prefix}-rm`;
  const remoteAddress = '10.216.1.2';
  let remoteAgent: NetnsProcess;
  const processes: NetnsProcess[] = [];
  let directory = '';
  let socket: string;
  let agent: NetnsProcess;
  let port: number;
  const notReady = { key: 'node.kubernetes.io/not-ready', effect: 'NoSchedule' };
  const ip = (...args: string[]) => execFileSync('ip', args, { stdio: 'pipe' });
  const spawn = (ns: string, args: string[]) => {
    const child = new NetnsProcess(ns, [process.execPath, '--import', 'tsx', ...args]);
    processes.push(child);
    return child;
  };
  const spawnAgent = (ns: string, args: string[]) => {
    const child = new NetnsProcess(ns, [...synpassCommand(), 'agent', 'run', ...args]);
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

    // A remote host on another network, routed through the node.
    ip('netns', 'add', remote);
    ip('-n', remote, 'link', 'set', 'lo', 'up');
    ip('-n', remote, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'uplink', 'netns', node);
    ip('-n', remote, 'addr', 'add', `${remoteAddress}/24`, 'dev', 'eth0');
    ip('-n', remote, 'link', 'set', 'eth0', 'up');
    ip('-n', remote, 'route', 'add', 'default', 'via', '10.216.1.1');
    ip('-n', node, 'addr', 'add', '10.216.1.1/24', 'dev', 'uplink');
    ip('-n', node, 'link', 'set', 'uplink', 'up');

    directory = scratchDirectory('k8s');
    await initDomain('cluster.synpass', join(directory, 'domain'));
    await issueAgent({ domainDirectory: join(directory, 'domain'), trustDomain: 'cluster.synpass', agentId: 'node-1', namespaces: ['k8s', 'host'], ttlSeconds: 3600, outputDirectory: join(directory, 'agent') });
    await issueAgent({ domainDirectory: join(directory, 'domain'), trustDomain: 'cluster.synpass', agentId: 'remote', namespaces: ['app'], ttlSeconds: 3600, outputDirectory: join(directory, 'remote') });
    const pod = (name: string, ip: string, app: string) => ({
      metadata: { name, namespace: 'shop', resourceVersion: '1', labels: { app } },
      spec: { nodeName: 'node-1', serviceAccountName: app },
      status: { phase: 'Running', podIP: ip, podIPs: [{ ip }] },
    });
    writeFileSync(join(directory, 'pods.json'), JSON.stringify([pod('a-1', address.a, 'a'), pod('b-1', address.b, 'b'), pod('c-1', address.c, 'c')]));
    // The node registered with the readiness taint, beside one of the kubelet's.
    writeFileSync(join(directory, 'nodes.json'), JSON.stringify([{ metadata: { name: 'node-1' }, spec: { taints: [{ key: 'synpass.io/agent-not-ready', value: 'true', effect: 'NoExecute' }, notReady] } }]));
    const kubeApi = spawn(node, [API, join(directory, 'pods.json'), '0', join(directory, 'nodes.json')]);
    port = (await kubeApi.waitFor((l) => typeof l.listening === 'number')).listening as number;
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
        targets: ['10.216.1.0/24'],
        policy: { directory: join(directory, 'policy'), watch: false },
        telemetry: { whoisSocket: join(directory, 'whois.sock') },
      }),
    );
    writeFileSync(
      join(directory, 'remote.yaml'),
      stringify({
        mode: 'identity',
        identity: {
          subject: 'spiffe://cluster.synpass/remote',
          credential: join(directory, 'remote/credential.jwt'),
          signingKey: join(directory, 'remote/sign.key.pem'),
          keyAgreementKey: join(directory, 'remote/kex.key.pem'),
          trustBundles: join(directory, 'domain'),
        },
        admission: { protectedPorts: [9090], allow: [{ subject: 'spiffe://cluster.synpass/ns/shop/sa/a' }] },
        targets: ['10.215.1.0/24'],
        telemetry: { whoisSocket: join(directory, 'remote-whois.sock') },
      }),
    );
    remoteAgent = spawnAgent(remote, ['--config', join(directory, 'remote.yaml'), '--status-socket', join(directory, 'remote.sock')]);
    await remoteAgent.waitFor((l) => l.msg === 'agent running', 20_000);
    await spawn(remote, [PEER, 'server', '9090', 'http']).waitFor((l) => l.listening === 9090);
    socket = join(directory, 'status.sock');
    agent = spawnAgent(node, ['--config', join(directory, 'agent.yaml'), '--status-socket', socket]);
    await agent.waitFor((l) => l.msg === 'agent running', 20_000);
    await spawn(pods.b, [PEER, 'server', '8080', 'http']).waitFor((l) => l.listening === 8080);
  });

  after(async () => {
    await Promise.all(processes.map((child) => child.stop('SIGKILL', 2_000)));
    for (const ns of [node, remote, ...Object.values(pods)]) {
      try {
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
      } catch {
        // never created: before() failed early
      }
    }
    if (directory) rmSync(directory, { recursive: true, force: true });
  });

  async function request(from: 'a' | 'c', host = address.b, port = '8080'): Promise<Record<string, unknown> | null> {
    const child = spawn(pods[from], [PEER, 'http', host, port]);
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

  it('once running, the agent took its readiness taint off the node and left the other; status says so', async () => {
    const removed = await agent.waitFor((l) => l.msg === 'readiness taint removed from the node: pods may start', 10_000);
    assert.ok(agent.lines.indexOf(removed) > agent.lines.findIndex((l) => l.msg === 'agent running'));
    const read = `fetch('http://127.0.0.1:${port}/api/v1/nodes/node-1').then((r) => r.text()).then((t) => process.stdout.write(t))`;
    const stored = JSON.parse(execFileSync('ip', ['netns', 'exec', node, process.execPath, '-e', read], { encoding: 'utf8' })) as { spec: { taints: object[] } };
    assert.deepEqual(stored.spec.taints, [notReady]);
    const status = (await readStatus(socket)) as { kubernetes?: unknown };
    assert.deepEqual(status.kubernetes, { node: 'node-1', readinessTaint: { key: 'synpass.io/agent-not-ready', state: 'removed', attempts: 1 } });
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

  it('pod A reaches a remote host as itself: its token leaves through the node; pod C is cloaked there', async () => {
    const response = await request('a', remoteAddress, '9090');
    const recent = (child: NetnsProcess) => JSON.stringify(child.lines.filter((l) => l.event === 'handshake').slice(-4));
    assert.equal(response?.status, 200, `node: ${recent(agent)}\nremote: ${recent(remoteAgent)}`);
    const seen = await remoteAgent.waitFor((l) => l.event === 'handshake' && l.stage === 'syn' && l.verdict === 'accept');
    assert.equal((seen.peer as { subject: string }).subject, 'spiffe://cluster.synpass/ns/shop/sa/a');
    assert.equal((seen.peer as { attributes: Record<string, string> }).attributes['k8s.label.app'], 'a');
    assert.equal(await request('c', remoteAddress, '9090'), null);
    const refused = await remoteAgent.waitFor((l) => l.event === 'handshake' && l.verdict === 'drop');
    assert.equal(refused.reason, 'not-allowed');
    assert.equal((refused.peer as { subject: string }).subject, 'spiffe://cluster.synpass/ns/shop/sa/c');
  });
});
