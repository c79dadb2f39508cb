// A host that routes for a container (a network namespace of its own behind a veth, as Docker's
// bridge or a VM's tap): the container's handshakes are not the host's. Its agent neither judges
// them by the host's policy (nor cloaks the container's ports in its kernel) nor gives them the
// host's identity: they pass as if no agent ran, and the agents at the other end judge them as
// from a host without one. Nor is another agent's fast SYN routed through the host its to know.
// A port the host publishes for a container by DNAT, though, is the host's own: judged by its
// policy and answered with its identity.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { FAST_SYN_OPTION } from '../../agent/src/kernel/layouts.ts';
import { inject, writePackets } from '../../scripts/lib/attack-lab.ts';
import { DOMAIN, startIdentityLab, type IdentityLab } from '../../scripts/lib/identity-lab.ts';
import { countersMoved, kernelFastPathOf } from '../../scripts/lib/kernel-counters.ts';
import { ipv4Segment } from '../../scripts/lib/packets.ts';
import { scratchDirectory } from '../../scripts/lib/scratch.ts';
import { isRoot, ROOT, sleep, type Lab } from '../../scripts/lib/lab.ts';

/** web's policy (policy/examples/three-tier) admits only 443 from anyone: 8080 is closed on web. */
const CLOSED_ON_WEB = 8080;
const ECHO = 9000;
/** A port api's policy opens to web, which api publishes by DNAT for a container behind it. */
const PUBLISHED = 7000;
const PEER = join(ROOT, 'scripts/lib/peer.ts');
const run = promisify(execFile);

describe('a host that routes for a container', { skip: !isRoot() && 'needs root for network namespaces' }, () => {
  let fixture: IdentityLab;
  let lab: Lab;
  let container: string;
  let scratch: string;
  let containerServers: ChildProcess[] = [];
  /** The container behind api, which api publishes on PUBLISHED. */
  let published: string;
  const publishedSubnet = '10.219.121';
  const publishedAddress = `${publishedSubnet}.2`;
  const subnet = '10.219.21';
  const containerAddress = `${subnet}.2`;
  const subnet6 = 'fd53:5351:0:21';
  const containerAddress6 = `${subnet6}::2`;

  /** Runs scripts/lib/peer.ts in the container; its JSON line, or the failure's text. */
  const fromContainer = async (args: string[], timeoutMs = 8_000): Promise<Record<string, unknown>> => {
    try {
      const { stdout } = await run('ip', ['netns', 'exec', container, process.execPath, '--import', 'tsx', PEER, ...args], { encoding: 'utf8', timeout: timeoutMs, cwd: ROOT });
      return JSON.parse(stdout.trim().split('\n')[0]!) as Record<string, unknown>;
    } catch (error) {
      return { failed: (error as Error).message.split('\n')[0] };
    }
  };
  const verdictsAbout = (lines: Record<string, unknown>[], address: string) => lines.filter((line) => line.event === 'handshake' && [line.source, line.destination].some((end) => String(end).includes(address)));

  before(async () => {
    fixture = await startIdentityLab({ prefix: 'rt', net: 21, server: { port: CLOSED_ON_WEB, kind: 'http' } });
    ({ lab } = fixture);
    container = `${lab.namespace('web')}-ct`;
    published = `${lab.namespace('api')}-ct`;
    const ip = (args: string[]) => execFileSync('ip', args, { stdio: 'pipe' });
    /** A network namespace behind `host` (a veth `ctv` there, its end `eth0`), forwarding on, with a server on `port`. */
    const containerBehind = (host: 'web' | 'api', namespace: string, network: string, port: number): ChildProcess => {
      const router = lab.namespace(host);
      ip(['netns', 'add', namespace]);
      ip(['-n', router, 'link', 'add', 'ctv', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', namespace]);
      ip(['-n', router, 'addr', 'add', `${network}.1/30`, 'dev', 'ctv']);
      ip(['-n', router, 'link', 'set', 'ctv', 'up']);
      ip(['-n', namespace, 'addr', 'add', `${network}.2/30`, 'dev', 'eth0']);
      ip(['-n', namespace, 'link', 'set', 'eth0', 'up']);
      ip(['-n', namespace, 'link', 'set', 'lo', 'up']);
      ip(['-n', namespace, 'route', 'add', 'default', 'via', `${network}.1`]);
      execFileSync('ip', ['netns', 'exec', router, 'sysctl', '-qw', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1']);
      return spawn('ip', ['netns', 'exec', namespace, process.execPath, '--import', 'tsx', PEER, 'server', String(port), 'echo', '120'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'ignore'] });
    };
    containerServers = [containerBehind('web', container, subnet, CLOSED_ON_WEB), containerBehind('api', published, publishedSubnet, PUBLISHED)];
    // The container behind web has an IPv6 address too.
    ip(['-n', lab.namespace('web'), '-6', 'addr', 'add', `${subnet6}::1/64`, 'dev', 'ctv', 'nodad']);
    ip(['-n', container, '-6', 'addr', 'add', `${containerAddress6}/64`, 'dev', 'eth0', 'nodad']);
    ip(['-n', container, '-6', 'route', 'add', 'default', 'via', `${subnet6}::1`]);
    // No NAT: the other hosts see the container's own address, and route it back through web.
    for (const host of ['api', 'outsider'] as const) {
      ip(['-n', lab.namespace(host), 'route', 'add', `${subnet}.0/30`, 'via', lab.address('web')]);
      ip(['-n', lab.namespace(host), '-6', 'route', 'add', `${subnet6}::/64`, 'via', lab.address('web', 6)]);
    }
    // api publishes its container's port by DNAT.
    execFileSync('ip', ['netns', 'exec', lab.namespace('api'), 'iptables', '-t', 'nat', '-A', 'PREROUTING', '-d', lab.address('api'), '-p', 'tcp', '--dport', String(PUBLISHED), '-j', 'DNAT', '--to-destination', `${publishedAddress}:${PUBLISHED}`]);
    scratch = scratchDirectory('routed-e2e');
    for (const server of containerServers) {
      await new Promise<void>((resolve, reject) => {
        server.stdout!.once('data', () => { resolve(); });
        server.once('exit', () => { reject(new Error('a container\'s server did not start')); });
      });
    }
  });

  after(async () => {
    for (const server of containerServers) server.kill('SIGKILL');
    rmSync(scratch, { recursive: true, force: true });
    for (const namespace of [container, published]) execFileSync('bash', ['-c', `for pid in $(ip netns pids ${namespace} 2>/dev/null); do kill -9 $pid; done; ip netns del ${namespace} 2>/dev/null || true`]);
    await fixture.down();
  });

  it('a connection from the container to a host without an agent passes web untouched: no verdict, no token', async () => {
    // Which web says at start, as it leaves no verdict to say it by.
    assert.equal(fixture.web.process.lines.find((line) => line.msg === 'rules installed')?.routed, 'passes (not this host\'s)');
    const echo = lab.peer('outsider', ['server', String(ECHO), 'echo', '60']);
    await echo.waitFor((line) => line.listening === ECHO);
    assert.deepEqual(await fromContainer(['echo', lab.address('outsider'), String(ECHO), 'routed']), { echoed: 'routed' });
    await sleep(300);
    assert.deepEqual(verdictsAbout(fixture.web.process.lines, containerAddress), [], 'web judged a handshake it only routes');
  });

  it('a connection to the container passes web though web\'s own policy closes that port, in its queue and in its kernel (IPv4 and IPv6)', async () => {
    for (const address of [containerAddress, containerAddress6]) {
      const reply = await lab.peerOnce('outsider', ['echo', address, String(CLOSED_ON_WEB), 'inbound']);
      assert.deepEqual(reply, { echoed: 'inbound' }, address);
      assert.deepEqual(verdictsAbout(fixture.web.process.lines, address), [], `web judged a handshake it only routes (${address})`);
    }
    // web's own port stays cloaked to the same client: no answer at all (not even a reset).
    await assert.rejects(lab.peerOnce('outsider', ['echo', lab.address('web'), String(CLOSED_ON_WEB), 'cloaked'], 3_000), /timed out/);
  });

  it('another agent\'s fast SYN routed through web is not web\'s to know: the container answers it', async () => {
    // A SYN as a known pair's kernel writes it (fast option last), for a pair web never met.
    const fastOption = Buffer.alloc(FAST_SYN_OPTION.length);
    fastOption[0] = FAST_SYN_OPTION.kind;
    fastOption[1] = FAST_SYN_OPTION.length;
    fastOption.writeUInt16BE(FAST_SYN_OPTION.exid, 2);
    fastOption.writeUInt32BE(0x5eed, 4);
    fastOption.writeUInt32BE(Math.floor(Date.now() / 1000), 8);
    const options = Buffer.concat([Buffer.from([2, 4, 0x05, 0xb4]), fastOption]);
    const syn = ipv4Segment({ source: lab.address('outsider'), target: containerAddress, sourcePort: 40_123, port: CLOSED_ON_WEB, sequence: 0x1234_5678, options });
    const kernel = lab.options.kernel === true;
    const before = kernel ? kernelFastPathOf(await fixture.web.status()) : null;
    const answers = await lab.capture(`tcp[tcpflags] & (tcp-syn|tcp-ack) == (tcp-syn|tcp-ack) and src host ${containerAddress}`, 1, 6_000);
    const sender = inject(lab, 'replay', writePackets(join(scratch, 'routed-fast-syn.hex'), [syn]), ['10', '3', '3'], { from: 'outsider', to: 'web' });
    await sender.exited;
    await answers.waitFor((line) => typeof line.done === 'number', 10_000);
    assert.ok(answers.lines.some((line) => typeof line.hex === 'string'), 'the container never answered: web dropped a SYN it only routes');
    // (The previous test's SYNs to web's own closed port may still be retried and dropped meanwhile.)
    if (before !== null) assert.equal(countersMoved(before, kernelFastPathOf(await fixture.web.status())).synUnknownPeer, undefined, 'web\'s kernel judged it');
  });

  it('the container does not speak as web: api, which admits web, refuses the container\'s token-less SYN', async () => {
    const mark = fixture.api.process.lines.length;
    const attempt = await fromContainer(['http', lab.address('api'), String(CLOSED_ON_WEB)], 6_000);
    assert.ok(attempt.status === undefined, `the container reached api: ${JSON.stringify(attempt)}`);
    const refused = verdictsAbout(fixture.api.process.lines.slice(mark), containerAddress);
    assert.ok(refused.length > 0, 'api saw no SYN from the container');
    assert.ok(
      refused.every((line) => line.verdict === 'drop' && line.reason === 'no-identity'),
      JSON.stringify(refused.map((line) => [line.verdict, line.reason])),
    );
    assert.deepEqual(verdictsAbout(fixture.web.process.lines, containerAddress), []);
    // web itself still reaches api as web.
    assert.equal((await lab.peerOnce('web', ['http', lab.address('api'), String(CLOSED_ON_WEB)])).status, 200);
  });
  it('a port api publishes by DNAT for a container speaks as api: web gets api\'s identity and api\'s policy judges web', async () => {
    const [webMark, apiMark] = [fixture.web.process.lines.length, fixture.api.process.lines.length];
    assert.deepEqual(await lab.peerOnce('web', ['echo', lab.address('api'), String(PUBLISHED), 'published']), { echoed: 'published' });
    await sleep(300);
    const answer = fixture.web.process.lines.slice(webMark).find((line) => line.event === 'handshake' && line.stage === 'syn-ack' && String(line.source).endsWith(`:${PUBLISHED}`));
    assert.equal((answer?.peer as { subject?: string } | undefined)?.subject, `spiffe://${DOMAIN}/api`, JSON.stringify(answer));
    const judged = fixture.api.process.lines.slice(apiMark).find((line) => line.event === 'handshake' && line.stage === 'syn' && String(line.destination).endsWith(`:${PUBLISHED}`));
    assert.deepEqual([judged?.verdict, (judged?.peer as { subject?: string } | undefined)?.subject, judged?.rule], ['accept', `spiffe://${DOMAIN}/web`, 'api/from-web']);
  });
});
