// The kernel fast path over real packets: after one first contact, web's connections to api are
// proven and judged in the kernels of both hosts with no packet queued to either agent; forged,
// replayed and misdirected fast SYNs, token-less scans and unproven SYN-ACKs are dropped (and
// counted) there; a policy edit and a key rotation take effect from the next fast SYN; nothing
// stays behind.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { endianness } from 'node:os';
import { canonicalAddress } from '../../agent/src/datapath/addresses.ts';
import { connectionMarks } from '../../agent/src/datapath/marks.ts';
import { FAST_COUNTERS, FAST_SYN_OPTION } from '../../agent/src/kernel/layouts.ts';
import { BACKLOG_SLICE_MS, KernelFastPath, REJUDGE_SLICE_MS } from '../../agent/src/kernel/fast-path.ts';
import type { Authorization, Authorizer } from '../../agent/src/handshake/authorizer.ts';
import { fastPathObjectPath, loadBinding } from '../../agent/src/native/addon.ts';
import { decodeJws } from '../../agent/src/token/jws.ts';
import { flushCaches } from '../../agent/src/telemetry/status-client.ts';
import { inject, verdictsBetween, writePackets } from '../../scripts/lib/attack-lab.ts';
import { DOMAIN, REPORTS_WORKLOAD, rotateAgent, startIdentityLab, type IdentityLab } from '../../scripts/lib/identity-lab.ts';
import { isRoot, ROOT, settledStatus, sleep, synpassCommand, waitUntil, type AgentHandle, type Lab, type NetnsProcess } from '../../scripts/lib/lab.ts';
import { countersMoved, kernelFastPathOf, type KernelFastPathStatus } from '../../scripts/lib/kernel-counters.ts';
import { dumpPinnedMap, ipv4PodPair, mappedIpv4 } from '../../scripts/lib/bpf-maps.ts';
import { fixChecksums, ipv4Segment, layout, plainSyn, tcpOptionOffset } from '../../scripts/lib/packets.ts';
import { scratchDirectory } from '../../scripts/lib/scratch.ts';

const PORT = 8080;
const ECHO = 7000;
/** api's per-source bucket (datapath.queueRatePerSource): low, so a short burst overruns it. */
const SOURCE_RATE = 200;
/** A credential this short ends within the test: the kernel entries resting on it end with it. */
const SHORT_CREDENTIAL_SECONDS = 15;

interface Share {
  kernel: number;
  queue: number;
  kernelShare: number | null;
}

interface FastStatus extends KernelFastPathStatus {
  shares: { incoming: Share; outgoing: Share };
  conntrack: { skipped: boolean; reason: string };
  listenersOnQueue: number[];
  listenerSweep: { enabled: number[]; alreadyEnabled: number; notRun: string | null } | null;
}

async function fast(agent: AgentHandle): Promise<FastStatus> {
  return kernelFastPathOf(await agent.status()) as FastStatus;
}


/** Rules for api: its stack never answers SYNs to PORT (its tc program still judges them first), and the rule's removal. */
const DROP_SYNS = ['iptables', '-t', 'raw', '-I', 'PREROUTING', '-p', 'tcp', '--dport', String(PORT), '--syn', '-j', 'DROP'];
const UNDROP_SYNS = DROP_SYNS.map((word) => (word === '-I' ? '-D' : word));
/** On web: api's SYN-ACKs from the port, dropped after web's `tc` program has seen them. */
const DROP_ANSWERS = ['iptables', '-t', 'raw', '-I', 'PREROUTING', '-p', 'tcp', '--sport', String(PORT), '--tcp-flags', 'SYN,ACK', 'SYN,ACK', '-j', 'DROP'];
const UNDROP_ANSWERS = DROP_ANSWERS.map((word) => (word === '-I' ? '-D' : word));

describe('kernel fast path end to end', { skip: !isRoot() && 'needs root for network namespaces and eBPF' }, () => {
  let fixture: IdentityLab;
  let lab: Lab;
  let api: AgentHandle;
  let web: AgentHandle;
  let policies: string;
  let apiPolicyText: string;
  let scratch: string;
  let echoServer: NetnsProcess;

  before(async () => {
    scratch = scratchDirectory('fast-path-e2e');
    policies = join(scratch, 'policies');
    cpSync(join(ROOT, 'policy/examples/three-tier'), policies, { recursive: true });
    apiPolicyText = readFileSync(join(policies, 'api.yaml'), 'utf8');
    // The service outlives the suite (about two minutes here; a lab's peers stop after 120 s unless
    // told otherwise): a suite run slower once found api's port closed and its SYN answered by a reset.
    fixture = await startIdentityLab({ prefix: 'fp', net: 19, policyDirectory: policies, server: { port: PORT, kind: 'http', seconds: 600 }, kernel: true, api: { env: { SYNPASS_DATAPATH_QUEUE_RATE_PER_SOURCE: String(SOURCE_RATE) } } });
    ({ lab, api, web } = fixture);
    echoServer = lab.peer('api', ['server', String(ECHO), 'echo']);
    await echoServer.waitFor((l) => l.listening === ECHO);
  });

  after(async () => {
    await fixture.down();
  });

  async function http(family: 4 | 6 = 4, timeoutMs = 5_000): Promise<boolean> {
    const result = await lab.peerOnce('web', ['http', lab.address('api', family), String(PORT)], timeoutMs).catch(() => null);
    return result?.status === 200;
  }

  const queued = async (agent: AgentHandle): Promise<number> => (await settledStatus(() => agent.status())).queue.received!;

  /** Packets mangle PREROUTING sent into SYNPASS-IN for being an untracked SYN or SYN-ACK, both families. */
  function untrackedSynJumps(host: 'web' | 'api'): number {
    let total = 0;
    for (const line of lab.iptablesSave(host, true).split('\n')) {
      const jumped = /^\[(\d+):\d+\] -A PREROUTING .*--tcp-flags SYN SYN .*-j SYNPASS-IN$/.exec(line);
      if (jumped !== null) total += Number(jumped[1]);
    }
    return total;
  }

  /** Entries of the agent's table of servers that hold its workloads in their kernels. */
  async function clientEntries(agent: AgentHandle): Promise<number> {
    return ((await agent.status()) as unknown as { tables: Record<string, { entries: number }> }).tables['kernel-clients']!.entries;
  }

  it('runs on both agents and says so', async () => {
    for (const agent of [api, web]) {
      const status = await fast(agent);
      assert.equal(status.running, true, status.reason);
    }
  });

  for (const family of [4, 6] as const) {
    it(`after one first contact, IPv${family} connections of the pair queue no packet on either side`, async () => {
      assert.equal(await http(family), true, 'first contact');
      const [apiQueued, webQueued, apiBefore, webBefore] = [await queued(api), await queued(web), await fast(api), await fast(web)];
      const jumpsBefore = [untrackedSynJumps('api'), untrackedSynJumps('web')];
      const rounds = 20;
      for (let i = 0; i < rounds; i++) assert.equal(await http(family), true, `fast connection ${i}`);
      assert.equal(await queued(api), apiQueued, 'api queued nothing');
      assert.equal(await queued(web), webQueued, 'web queued nothing');
      // The kernel marks the SYNs and SYN-ACKs it proves judged: none of them walked a rule chain.
      assert.deepEqual([untrackedSynJumps('api'), untrackedSynJumps('web')], jumpsBefore, 'no proven SYN or SYN-ACK jumped into SYNPASS-IN');
      assert.deepEqual(countersMoved(apiBefore, await fast(api)), { synAccepted: rounds, synAckSigned: rounds });
      assert.deepEqual(countersMoved(webBefore, await fast(web)), { synSent: rounds, synAckVerified: rounds });
      // Status tells the shares apart: these SYNs count for the kernel, none for the queue.
      const [apiShares, webShares] = [(await fast(api)).shares, (await fast(web)).shares];
      assert.deepEqual([apiShares.incoming.kernel - apiBefore.shares.incoming.kernel, apiShares.incoming.queue - apiBefore.shares.incoming.queue], [rounds, 0]);
      assert.deepEqual([webShares.outgoing.kernel - webBefore.shares.outgoing.kernel, webShares.outgoing.queue - webBefore.shares.outgoing.queue], [rounds, 0]);
      assert.ok(apiShares.incoming.queue >= 1, 'the first contact was queued');
      assert.equal(apiShares.incoming.kernelShare, Math.round((apiShares.incoming.kernel / (apiShares.incoming.kernel + apiShares.incoming.queue)) * 1000) / 1000);
      // Accepted in the kernel, logged with the peer the fast SYN proved.
      const logged = await api.process.waitFor((l) => l.msg === 'handshake verdict' && l.path === 'kernel' && l.reason === 'ok-kernel' && String(l.source).startsWith(`${canonicalAddress(lab.address('web', family))}:`), 5_000);
      assert.equal((logged.peer as { subject: string }).subject, `spiffe://${DOMAIN}/web`);
    });
  }

  /** The host's conntrack entry of web's connection from `clientPort` to the echo service, if any. */
  function conntrackEntry(host: 'web' | 'api', clientPort: number): string | undefined {
    return lab.exec(host, ['cat', '/proc/net/nf_conntrack']).split('\n').find((line) => line.includes(`sport=${String(clientPort)} dport=${ECHO} `));
  }

  it('whois names the peer of a connection the kernel judged, on both ends', async () => {
    const echo = await lab.peerOnce('web', ['echo', lab.address('api'), String(ECHO), 'first']);
    assert.equal(echo.echoed, 'first');
    const apiBefore = await fast(api);
    const held = lab.peer('web', ['hold', lab.address('api'), String(ECHO)], { stdin: true });
    const connected = await held.waitFor((l) => l.connected === true);
    assert.equal(countersMoved(apiBefore, await fast(api)).synAccepted, 1, 'the held connection took the fast path');
    const webEnd = `${lab.address('web')}:${String(connected.localPort)}`;
    const apiEnd = `${lab.address('api')}:${ECHO}`;
    const whois = (host: 'api' | 'web') =>
      JSON.parse(execFileSync('ip', ['netns', 'exec', lab.namespace(host), ...synpassCommand(), 'whois', webEnd, apiEnd, '--socket', lab.whoisSocket(host)], { cwd: ROOT, encoding: 'utf8' })) as {
        identity: { subject: string };
      };
    assert.equal(whois('api').identity.subject, `spiffe://${DOMAIN}/web`);
    assert.equal(whois('web').identity.subject, `spiffe://${DOMAIN}/api`);
    // Neither end tracks the connection (datapath.fastPathConntrack `auto`, and the lab has no NAT):
    // not one of its packets, handshake and data, made a conntrack entry.
    // Nor does one of its data packets walk the agent's mangle chains: only packets without the
    // untracked bit, and SYNs, jump from the hooks (packet counters of the jump rules, both ends).
    const jumped = (host: 'web' | 'api') =>
      lab
        .exec(host, ['iptables-save', '-c', '-t', 'mangle'])
        .split('\n')
        .filter((line) => / -A (PREROUTING|POSTROUTING) .*-j SYNPASS-(IN|OUT)$/.test(line))
        .reduce((sum, line) => sum + Number(/^\[(\d+):/.exec(line)?.[1] ?? 0), 0);
    const jumpedBefore = { web: jumped('web'), api: jumped('api') };
    for (let i = 0; i < 20; i++) {
      held.write(`tracked? ${String(i)}\n`);
      await held.waitFor((l) => l.echoed === `tracked? ${String(i)}`);
    }
    assert.deepEqual({ web: jumped('web') - jumpedBefore.web, api: jumped('api') - jumpedBefore.api }, { web: 0, api: 0 }, '20 round trips of data, no jump');
    for (const host of ['web', 'api'] as const) {
      assert.deepEqual((await fast(host === 'web' ? web : api)).conntrack, { skipped: true, reason: 'skipped (auto), by nftables' });
      // nftables' own notrack, not the xtables target iptables-nft would run per packet.
      assert.match(lab.exec(host, ['nft', '--debug=netlink', 'list', 'table', 'inet', 'synpass']), /\[ notrack \]/);
      assert.doesNotMatch(lab.exec(host, ['iptables-save', '-t', 'raw']), /SYNPASS/);
      const entry = conntrackEntry(host, Number(connected.localPort));
      assert.equal(entry, undefined, `${host}: ${entry ?? ''}`);
    }
    await held.stop();
  });

  it('where the nft command does not work, the iptables raw table leaves the fast path\'s connections out of conntrack instead', async () => {
    // A PATH with every system command but nft.
    const bin = join(scratch, 'no-nft');
    mkdirSync(bin, { recursive: true });
    for (const name of readdirSync('/usr/sbin')) if (name !== 'nft' && !existsSync(join(bin, name))) symlinkSync(join('/usr/sbin', name), join(bin, name));
    await api.process.stop('SIGTERM');
    api = await lab.startAgent('api', ['--config', fixture.files.configs.api], { SYNPASS_DATAPATH_QUEUE_RATE_PER_SOURCE: String(SOURCE_RATE), PATH: `${bin}:/usr/local/bin:/usr/bin:/bin` });
    try {
      assert.deepEqual((await fast(api)).conntrack, { skipped: true, reason: 'skipped (auto), by the iptables raw table' });
      assert.match(lab.exec('api', ['iptables-save', '-t', 'raw']), /-A SYNPASS-NOTRACK -j CT --notrack/);
      assert.doesNotMatch(lab.exec('api', ['nft', 'list', 'tables']), /synpass/);
      assert.equal(await http(), true);
      const apiBefore = await fast(api);
      const held = lab.peer('web', ['hold', lab.address('api'), String(ECHO)], { stdin: true });
      const connected = await held.waitFor((l) => l.connected === true);
      held.write('untracked?\n');
      await held.waitFor((l) => l.echoed === 'untracked?');
      assert.equal(countersMoved(apiBefore, await fast(api)).synAccepted, 1, 'the held connection took the fast path');
      const entry = conntrackEntry('api', Number(connected.localPort));
      assert.equal(entry, undefined, entry);
      await held.stop();
    } finally {
      await api.process.stop('SIGTERM');
      api = await startApi();
    }
    assert.doesNotMatch(lab.exec('api', ['iptables-save', '-t', 'raw']), /SYNPASS/, 'the next agent, with nft, leaves no raw-table rule');
    assert.deepEqual((await fast(api)).conntrack, { skipped: true, reason: 'skipped (auto), by nftables' });
  });

  it('a process in a workload cgroup speaks as that workload, at first contact and in the kernel, apart from the host\'s other processes of the same uid', async () => {
    const reports = `spiffe://${DOMAIN}/web-reports`;
    const subjectOf = (line: Record<string, unknown>) => (line.peer as { subject?: string } | null)?.subject;
    const reportsHttp = async (family: 4 | 6 = 4) =>
      (await lab.peerOnce('web', ['http', lab.address('api', family), String(PORT)], 5_000, undefined, REPORTS_WORKLOAD).catch(() => null))?.status === 200;
    // Same uid (root) as every other process of web, in web's cgroup and in reports' below it.
    assert.equal(await http(), true, 'web itself, first');
    const mark = api.process.lines.length;
    const after = (line: Record<string, unknown>) => api.process.lines.indexOf(line) >= mark;
    const [apiQueued, apiBefore] = [await queued(api), await fast(api)];
    // Its first connection takes the queue (with the known pair's proof: web's agent knows api), as
    // no kernel entry is reports' own; web's fast entry does not serve it.
    assert.equal(await reportsHttp(), true, 'first connection of reports');
    assert.ok((await queued(api)) > apiQueued, 'reports took the queue');
    assert.deepEqual(countersMoved(apiBefore, await fast(api)).synAccepted, undefined);
    const first = await api.process.waitFor((l) => after(l) && l.msg === 'handshake verdict' && l.stage === 'syn' && l.path !== 'kernel' && subjectOf(l) === reports, 5_000);
    assert.equal((first.peer as { attributes: Record<string, string> }).attributes['process.cgroup'], lab.workloadCgroup('web', REPORTS_WORKLOAD).path);
    // From then on reports is proven in the kernel under its own entry, and named there.
    const fastBefore = await fast(api);
    for (let i = 0; i < 5; i++) assert.equal(await reportsHttp(), true, `fast connection ${i} of reports`);
    assert.equal(countersMoved(fastBefore, await fast(api)).synAccepted, 5);
    await api.process.waitFor((l) => after(l) && l.path === 'kernel' && l.reason === 'ok-kernel' && subjectOf(l) === reports, 5_000);
    // Over IPv6 too (the kernel's table holds IPv6 connections whole, IPv4 ones as ::ffff:a.b.c.d).
    assert.equal(await reportsHttp(6), true, 'reports over IPv6');
    const source = `${canonicalAddress(lab.address('web', 6))}:`;
    await api.process.waitFor((l) => after(l) && l.msg === 'handshake verdict' && l.stage === 'syn' && String(l.source).startsWith(source) && subjectOf(l) === reports, 5_000);
    // web's own processes keep web's identity.
    const webMark = api.process.lines.length;
    assert.equal(await http(), true);
    const web = await api.process.waitFor((l) => api.process.lines.indexOf(l) >= webMark && l.msg === 'handshake verdict' && l.reason !== undefined && subjectOf(l) !== undefined, 5_000);
    assert.equal(subjectOf(web), `spiffe://${DOMAIN}/web`);
  });

  it('a segment of a fast connection that carries a marker option, anywhere in its options, still meets the rules and the queue', async () => {
    assert.equal((await lab.peerOnce('web', ['echo', lab.address('api'), String(ECHO), 'first'])).echoed, 'first');
    const fastBefore = await fast(api);
    const held = lab.peer('web', ['hold', lab.address('api'), String(ECHO)], { stdin: true });
    const connected = await held.waitFor((l) => l.connected === true);
    assert.equal(countersMoved(fastBefore, await fast(api)).synAccepted, 1, 'the held connection took the fast path');
    held.write('fast\n');
    await held.waitFor((l) => l.echoed === 'fast');
    // ACKs in the held connection's four-tuple with the marker first and padding after, last
    // after NOP, NOP, timestamps, and after two NOPs in the 12 bytes timestamps alone would take:
    // the kernel's marker test must walk the options as the rules' `--tcp-option` does, wherever
    // it takes a shortcut for the usual layout.
    const layouts = [
      [253, 4, 0xd3, 0x50, 1, 1, 1, 1],
      [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 253, 4, 0xd3, 0x50],
      [1, 1, 253, 4, 0xd3, 0x50, 1, 1, 1, 1, 1, 1],
    ];
    for (const layout of layouts) {
      const before = await api.status();
      const segment = ipv4Segment({ source: lab.address('web'), target: lab.address('api'), sourcePort: Number(connected.localPort), port: ECHO, sequence: 1, acknowledgment: 1, flags: 0x10, options: Uint8Array.from(layout) });
      await send([segment], { from: 'web', to: 'api' });
      const after = await api.status();
      assert.equal(after.queue.received! - before.queue.received!, 1, `queued, as on the queue path: options ${layout.join(',')}`);
    }
    held.write('still there\n');
    await held.waitFor((l) => l.echoed === 'still there');
    await held.stop();
  });

  /** A fast SYN from web to api as it crossed the switch. */
  async function capturedFastSyn(): Promise<Uint8Array> {
    const capture = await lab.capture(`tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn and src host ${lab.address('web')} and dst port ${PORT}`, 1, 10_000);
    assert.equal(await http(), true);
    await capture.waitFor((l) => typeof l.done === 'number', 15_000);
    const line = capture.lines.find((l) => typeof l.hex === 'string');
    assert.ok(line, 'captured the SYN');
    const syn = Uint8Array.from(Buffer.from(String(line.hex), 'hex'));
    assert.notEqual(tcpOptionOffset(syn, FAST_SYN_OPTION.kind, FAST_SYN_OPTION.length, FAST_SYN_OPTION.exid), -1, 'the SYN carries the fast option');
    return syn;
  }

  /** Sends `packets` from one host to another at the link layer and waits until they are out. */
  async function send(packets: Uint8Array[], hosts: { from: 'outsider' | 'api' | 'web'; to: 'api' | 'web' | 'outsider' } = { from: 'outsider', to: 'api' }): Promise<void> {
    const file = writePackets(join(scratch, `packets-${Date.now()}.hex`), packets);
    const sender = inject(lab, 'replay', file, ['max', '5', String(packets.length)], hosts);
    await sender.waitFor((l) => typeof l.sent === 'number', 10_000);
    await sleep(300);
  }

  it('drops a replayed fast SYN, one with a MAC bit flipped and one an hour old in the kernel, without a SYN-ACK', async () => {
    const syn = await capturedFastSyn();
    const at = tcpOptionOffset(syn, FAST_SYN_OPTION.kind, FAST_SYN_OPTION.length, FAST_SYN_OPTION.exid);
    const { ipVersion, tcpOffset } = layout(syn);
    const flipped = Uint8Array.from(syn);
    flipped[at + 19]! ^= 0x01;
    fixChecksums(flipped, ipVersion, tcpOffset);
    // Option: kind, length, ExID (2), fast id (4), time (4, unix s), MAC (8).
    const stale = Uint8Array.from(syn);
    const time = Buffer.from(stale.buffer, stale.byteOffset, stale.length);
    time.writeUInt32BE(time.readUInt32BE(at + 8) - 3600, at + 8);
    fixChecksums(stale, ipVersion, tcpOffset);
    const answers = await lab.capture(`tcp[tcpflags] & (tcp-syn|tcp-ack) == (tcp-syn|tcp-ack) and src host ${lab.address('api')}`, 5, 4_000);
    const before = await fast(api);
    const queuedBefore = await queued(api);
    await send([syn, flipped, stale]);
    assert.deepEqual(countersMoved(before, await fast(api)), { synReplayed: 1, synBadProof: 1, synStale: 1 });
    assert.equal(await queued(api), queuedBefore, 'neither reached the queue');
    const done = await answers.waitFor((l) => typeof l.done === 'number', 10_000);
    assert.equal(done.done, 0, 'api answered none');
  });

  it('drops a token-less SYN scan in the kernel, silently, before the queue', async () => {
    const ports = [PORT, ECHO, 22, 443];
    const scan = ports.map((port, i) => plainSyn(lab.address('outsider'), lab.address('api'), port, 40_000 + i, 0x1000 + i));
    const answers = await lab.capture(`tcp and src host ${lab.address('api')} and dst host ${lab.address('outsider')}`, 5, 4_000);
    const [before, queuedBefore] = [await fast(api), await queued(api)];
    await send(scan);
    assert.deepEqual(countersMoved(before, await fast(api)), { synNoIdentity: ports.length });
    assert.equal(await queued(api), queuedBefore, 'no SYN reached the queue');
    const done = await answers.waitFor((l) => typeof l.done === 'number', 10_000);
    assert.equal(done.done, 0, 'no SYN-ACK, no RST');
    // The flow log has the kernel's verdicts too: one line per source and cause, then folded.
    const logged = await api.process.waitFor((l) => l.msg === 'handshake verdict' && l.path === 'kernel' && l.reason === 'no-identity', 5_000);
    assert.equal(String(logged.source).startsWith(`${lab.address('outsider')}:`), true);
    // Policy governs api with a default deny and no network rule: every port is closed to them.
    const status = (await api.status()) as unknown as { kernelFastPath: { cloakedPorts: number } };
    assert.equal(status.kernelFastPath.cloakedPorts, 65_535);
  });

  it('takes an interface that appears after start within a second, and judges the SYNs arriving there', async () => {
    // A second link from the outsider to api, made while the agents run.
    const interfaces = async () => ((await api.status()) as unknown as { kernelFastPath: { interfaces: string[] } }).kernelFastPath.interfaces;
    const until = async (done: (names: string[]) => boolean) => {
      for (const deadline = Date.now() + 5_000; !done(await interfaces()) && Date.now() < deadline; ) await sleep(200);
      return interfaces();
    };
    execFileSync('ip', ['link', 'add', 'late0', 'netns', lab.namespace('api'), 'type', 'veth', 'peer', 'name', 'late1', 'netns', lab.namespace('outsider')]);
    try {
      lab.exec('api', ['ip', 'addr', 'add', '10.214.19.1/30', 'dev', 'late0']);
      lab.exec('api', ['ip', 'link', 'set', 'late0', 'up']);
      lab.exec('outsider', ['ip', 'addr', 'add', '10.214.19.2/30', 'dev', 'late1']);
      lab.exec('outsider', ['ip', 'link', 'set', 'late1', 'up']);
      assert.deepEqual((await until((names) => names.includes('late0'))).sort(), ['eth0', 'late0']);
      await api.process.waitFor((l) => l.msg === 'kernel fast path attached to new interfaces' && (l.interfaces as string[]).includes('late0'), 1_000);
      // A plain connect from the outsider over the new link: dropped by the tc program there (on
      // the queue it would have counted in queue.received).
      const [before, queuedBefore] = [await fast(api), await queued(api)];
      const attempt = await lab.peerOnce('outsider', ['http', '10.214.19.1', String(PORT)], 2_500).catch(() => null);
      assert.notEqual(attempt?.status, 200);
      assert.ok((countersMoved(before, await fast(api)).synNoIdentity ?? 0) >= 1, JSON.stringify(countersMoved(before, await fast(api))));
      assert.equal(await queued(api), queuedBefore, 'nothing reached the queue');
    } finally {
      lab.exec('api', ['ip', 'link', 'del', 'late0']);
    }
    // Gone again: forgotten, so it would be taken again if it came back.
    assert.deepEqual(await until((names) => !names.includes('late0')), ['eth0']);
  });

  it('names a listener its programs never saw begin listening (status, metric, one log line); once it listens again under them, its pairs move to the kernel', async () => {
    const LISTENERS_WARNING = 'listeners not on the kernel fast path';
    const echo = async (text: string) => (await lab.peerOnce('web', ['echo', lab.address('api'), String(ECHO), text])).echoed;
    await echoServer.stop();
    // Outside api's cgroup the sock_ops program never sees the socket listen, and the listener
    // sweep leaves it alone.
    const outside = lab.peer('api', ['server', String(ECHO), 'echo'], { outsideCgroup: true });
    await outside.waitFor((l) => l.listening === ECHO);
    // web forgets api: its next connect to the port is a first contact on the queue.
    await flushCaches(web.socket);
    const mark = api.process.lines.length;
    const queuedBefore = await queued(api);
    for (const text of ['first', 'second', 'third']) assert.equal(await echo(text), text);
    assert.ok((await queued(api)) - queuedBefore >= 6, 'every connect took the queue');
    assert.deepEqual((await fast(api)).listenersOnQueue, [ECHO]);
    const warned = await api.process.waitFor((l) => typeof l.msg === 'string' && l.msg.startsWith(LISTENERS_WARNING) && api.process.lines.indexOf(l) >= mark, 3_000);
    assert.deepEqual(warned.ports, [ECHO]);
    await sleep(1_200);
    assert.equal(api.process.lines.slice(mark).filter((l) => typeof l.msg === 'string' && l.msg.startsWith(LISTENERS_WARNING)).length, 1, 'said once per port');

    await outside.stop();
    echoServer = lab.peer('api', ['server', String(ECHO), 'echo']);
    await echoServer.waitFor((l) => l.listening === ECHO);
    // The next handshake (a known pair on the queue) meets a listener whose kernel signs: the
    // kernel takes the pair, and the port leaves the list.
    assert.equal(await echo('again'), 'again');
    assert.deepEqual((await fast(api)).listenersOnQueue, []);
    const [before, queuedAgain] = [await fast(api), await queued(api)];
    assert.equal(await echo('fast'), 'fast');
    assert.deepEqual(countersMoved(before, await fast(api)), { synAccepted: 1, synAckSigned: 1 });
    assert.equal(await queued(api), queuedAgain, 'nothing queued');
  });

  /** Packet counters of api's SYNPASS-IN-LIMIT rules: the `budgeted` pass and the hashlimit drop. */
  function limitCounters(): { budgeted: number; hashlimited: number } {
    const saved = lab.exec('api', ['iptables-save', '-c', '-t', 'mangle']).split('\n');
    const packets = (pattern: RegExp) => Number(/^\[(\d+):/.exec(saved.find((line) => pattern.test(line)) ?? '')?.[1]);
    return { budgeted: packets(/-A SYNPASS-IN-LIMIT -m mark --mark/), hashlimited: packets(/-A SYNPASS-IN-LIMIT -m hashlimit/) };
  }

  it('holds one source to its bucket in the kernel: first-contact SYNs above it never reach the queue', async () => {
    const marker = Uint8Array.from([253, 4, 0xd3, 0x50]);
    const total = 2_000;
    const flood = Array.from({ length: total }, (_, i) => ipv4Segment({ source: lab.address('outsider'), target: lab.address('api'), sourcePort: 20_000 + i, port: PORT, sequence: 0x5000 + i, options: marker }));
    const [before, statusBefore, rulesBefore] = [await fast(api), await api.status(), limitCounters()];
    const started = performance.now();
    await send(flood);
    const seconds = (performance.now() - started) / 1000;
    const limited = countersMoved(before, await fast(api)).synSourceLimited ?? 0;
    const statusAfter = await api.status();
    const reached = statusAfter.queue.received! - statusBefore.queue.received!;
    assert.equal(limited + reached, total, `each SYN was either held back in the kernel (${limited}) or queued (${reached})`);
    // The bucket holds one second's worth and refills at the rate, for at most as long as the send took.
    assert.ok(reached >= SOURCE_RATE && reached <= SOURCE_RATE * (1 + seconds) + 2, `${reached} queued in ${seconds.toFixed(2)} s`);
    // What the kernel program let by was charged there only: the rules' hashlimit let it straight on.
    const rules = limitCounters();
    assert.deepEqual([rules.budgeted - rulesBefore.budgeted, rules.hashlimited - rulesBefore.hashlimited], [reached, 0]);
    assert.equal(verdictsBetween(statusBefore, statusAfter)['drop:source-rate-limited'], limited, 'a verdict like any other');
    // Another source's first contact and the known pair are untouched.
    assert.equal(await http(), true);
  });

  it('drops a fast SYN sent to another agent (it holds no key for it)', async () => {
    const syn = await capturedFastSyn();
    // This host NATs: its agent keeps conntrack for the fast path's connections (`auto`).
    const masquerade = ['-t', 'nat', '-A', 'POSTROUTING', '-o', 'eth0', '-d', '192.0.2.0/24', '-j', 'MASQUERADE'];
    lab.exec('outsider', ['iptables', ...masquerade]);
    const mallory = await lab.startAgent('outsider', ['--config', fixture.files.configs.outsider]);
    try {
      const before = await fast(mallory);
      assert.equal(before.running, true, before.reason);
      assert.deepEqual(before.conntrack, { skipped: false, reason: 'kept: this network namespace has NAT rules (auto)' });
      assert.doesNotMatch(lab.exec('outsider', ['iptables-save', '-t', 'raw']), /SYNPASS/);
      assert.doesNotMatch(lab.exec('outsider', ['nft', 'list', 'tables']), /synpass/);
      const elsewhere = Uint8Array.from(syn);
      const { ipVersion, tcpOffset } = layout(elsewhere);
      elsewhere.set(lab.address('outsider').split('.').map(Number), 16);
      fixChecksums(elsewhere, ipVersion, tcpOffset);
      await send([elsewhere], { from: 'api', to: 'outsider' });
      assert.deepEqual(countersMoved(before, await fast(mallory)), { synUnknownPeer: 1 });
    } finally {
      await mallory.process.stop();
      lab.exec('outsider', ['iptables', ...masquerade.map((word) => (word === '-A' ? '-D' : word))]);
    }
  });

  /**
   * Kernel counters moved while web's fast SYN waits unanswered for forged SYN-ACKs, without its
   * fallback: the SYN's own retransmission timeout (1 s) may fire once they were judged, before
   * the reading (the injector takes most of that second to start), and says nothing of them. A
   * SYN-ACK judged after the fallback would find no record and not count as `synAckBadProof`.
   */
  function movedWhileSynHeld(before: FastStatus, after: FastStatus): Record<string, number> {
    const moved = countersMoved(before, after);
    delete moved.synFallback;
    return moved;
  }

  it('a client kernel drops a SYN-ACK to its fast SYN that lacks the server MAC or carries a wrong one', async () => {
    assert.equal(await http(), true);
    // api's stack never answers (its tc program still accepts the SYN first), so web's SYN waits.
    lab.exec('api', DROP_SYNS);
    try {
      const capture = await lab.capture(`tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn and src host ${lab.address('web')} and dst port ${PORT}`, 1, 10_000);
      const client = lab.peer('web', ['http', lab.address('api'), String(PORT)]);
      await capture.waitFor((l) => typeof l.done === 'number', 10_000);
      const syn = Buffer.from(String(capture.lines.find((l) => typeof l.hex === 'string')!.hex), 'hex');
      const clientPort = syn.readUInt16BE(20);
      const isn = syn.readUInt32BE(24);
      const answer = (options?: Uint8Array) =>
        ipv4Segment({ source: lab.address('api'), target: lab.address('web'), sourcePort: PORT, port: clientPort, sequence: 0x1234_5678, acknowledgment: isn + 1, flags: 0x12, ...(options ? { options } : {}) });
      const wrongMac = Uint8Array.from([FAST_SYN_OPTION.kind, 12, FAST_SYN_OPTION.exid >> 8, FAST_SYN_OPTION.exid & 0xff, 1, 2, 3, 4, 5, 6, 7, 8]);
      const before = await fast(web);
      await send([answer(), answer(wrongMac)], { from: 'api', to: 'web' });
      assert.deepEqual(movedWhileSynHeld(before, await fast(web)), { synAckBadProof: 2 });
      await client.stop();
    } finally {
      lab.exec('api', UNDROP_SYNS);
    }
  });

  it('a client that source-NATs its own connections: its kernel checks the server MAC of each fast SYN-ACK all the same, and drops a forged one', async () => {
    // web's connections to api leave from another address and port; web's agent, started with
    // that NAT rule in place, keeps conntrack for them (`auto`).
    const natted = lab.secondAddress('web');
    const snat = ['iptables', '-t', 'nat', '-A', 'POSTROUTING', '-d', lab.address('api'), '-p', 'tcp', '--dport', String(PORT), '-j', 'SNAT', '--to-source', `${natted}:41000-41999`];
    await web.process.stop('SIGTERM');
    lab.exec('web', ['ip', 'addr', 'add', `${natted}/24`, 'dev', 'eth0']);
    lab.exec('web', snat);
    let dropping = false;
    try {
      web = await lab.startAgent('web', ['--config', fixture.files.configs.web]);
      // api knows web at its own address only: a fallback and a first contact from the NAT's, then fast.
      for (let i = 0; i < 3; i++) assert.equal(await http(), true, `connection ${i}`);
      const rounds = 5;
      const before = await fast(web);
      for (let i = 0; i < rounds; i++) assert.equal(await http(), true, `fast connection ${i}`);
      assert.deepEqual(countersMoved(before, await fast(web)), { synSent: rounds, synAckVerified: rounds });
      lab.exec('api', DROP_SYNS);
      dropping = true;
      const capture = await lab.capture(`tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn and src host ${natted} and dst port ${PORT}`, 1, 10_000);
      const client = lab.peer('web', ['http', lab.address('api'), String(PORT)]);
      await capture.waitFor((l) => typeof l.done === 'number', 10_000);
      const syn = Buffer.from(String(capture.lines.find((l) => typeof l.hex === 'string')!.hex), 'hex');
      const [natPort, isn] = [syn.readUInt16BE(20), syn.readUInt32BE(24)];
      assert.ok(natPort >= 41000 && natPort <= 41999, `the SYN left from the NAT's port (${natPort})`);
      const forged = ipv4Segment({ source: lab.address('api'), target: natted, sourcePort: PORT, port: natPort, sequence: 0x1234_5678, acknowledgment: isn + 1, flags: 0x12 });
      const forgedBefore = await fast(web);
      await send([forged], { from: 'api', to: 'web' });
      assert.deepEqual(movedWhileSynHeld(forgedBefore, await fast(web)), { synAckBadProof: 1 });
      // The client completes once api answers again. Killed while its SYN went unanswered, it
      // left a conntrack entry under the NAT (SYN_SENT, 120 s): a later connect that drew the same
      // port went out NATed, from an address api's kernel did not know, and fell back once (seen
      // in the keep-over-restart test's loop, about one run in fifteen).
      lab.exec('api', UNDROP_SYNS);
      dropping = false;
      assert.equal((await client.waitFor((l) => l.status !== undefined, 10_000)).status, 200);
      // Only this test's connections, those under the NAT: the previous test's client, stopped
      // while its SYN went unanswered, may have fallen back to the queue first (its SYN tracked).
      const halfOpen = lab.exec('web', ['cat', '/proc/net/nf_conntrack']).split('\n').filter((line) => line.includes('SYN_SENT') && line.includes(`dport=${PORT}`) && line.includes(`dst=${natted} `));
      assert.deepEqual(halfOpen, [], 'no connection to api is left half-open in web\'s conntrack');
    } finally {
      if (dropping) lab.exec('api', UNDROP_SYNS);
      await web.process.stop('SIGTERM');
      lab.exec('web', snat.map((word) => (word === '-A' ? '-D' : word)));
      lab.exec('web', ['ip', 'addr', 'del', `${natted}/24`, 'dev', 'eth0']);
      web = await lab.startAgent('web', ['--config', fixture.files.configs.web]);
    }
  });

  it('a fast SYN whose answer is lost: its retransmit goes to the queue, and the answer api\'s kernel gives it from the connection the fast SYN opened, which no agent sees, is accepted by its MAC', async () => {
    // With conntrack following api's fast connections, its rules release the one a fast SYN
    // opened: its kernel's answers to the retransmits never reach its agent, so they carry the
    // kernel's MAC and no token. Until 2026-12-06 web's agent dropped each as from a server
    // without an agent, and the connect failed until it gave up.
    await api.process.stop('SIGTERM');
    api = await startApi('--fast-path-conntrack', 'keep');
    try {
      // A first contact if the pair is not known yet (this test alone), then the fast path.
      assert.equal(await http(), true);
      await connectsInKernel();
      const [webBefore, mark] = [await fast(web), web.process.lines.length];
      lab.exec('web', DROP_ANSWERS);
      let dropping = true;
      try {
        const client = lab.peer('web', ['http', lab.address('api'), String(PORT)]);
        // web's kernel sends the SYN again through the queue after its retransmission timeout (1 s).
        await waitUntil('web\'s fast SYN fell back', async () => countersMoved(webBefore, await fast(web)).synFallback === 1, 5_000);
        lab.exec('web', UNDROP_ANSWERS);
        dropping = false;
        const status = (await client.waitFor((l) => l.status !== undefined, 10_000).catch(() => null))?.status;
        const judged = web.process.lines.slice(mark).filter((line) => line.msg === 'handshake verdict');
        assert.equal(status, 200, `web's verdicts: ${JSON.stringify(judged)}`);
        const moved = countersMoved(webBefore, await fast(web));
        assert.deepEqual([moved.synSent, moved.synFallback, (moved.synAckVerified ?? 0) >= 2], [1, 1, true], JSON.stringify(moved));
        assert.deepEqual(judged.filter((line) => line.verdict === 'drop'), [], 'web\'s agent refused no answer');
        assert.deepEqual(judged.filter((line) => line.stage !== 'syn'), [], 'web\'s agent saw no answer: its kernel took it by the MAC');
      } finally {
        if (dropping) lab.exec('web', UNDROP_ANSWERS);
      }
    } finally {
      await api.process.stop('SIGTERM');
      api = await startApi();
    }
  });

  it('a fast SYN-ACK its kernel proved is let by whatever conntrack holds for its ports: a reused 4-tuple whose entry an unanswered first contact left marked `track` does not send it to web\'s agent', async () => {
    // Conntrack follows web's fast connections here, as where a host NATs its own.
    await web.process.stop('SIGTERM');
    web = await lab.startAgent('web', ['--config', fixture.files.configs.web, '--fast-path-conntrack', 'keep']);
    const CLIENT_PORT = 47_123;
    /** One connect from web's CLIENT_PORT to api: whether it connected within `ms`. */
    const fromClientPort = async (ms: number): Promise<boolean> => {
      const script = `const s = require('node:net').connect({ host: ${JSON.stringify(lab.address('api'))}, port: ${PORT}, localPort: ${CLIENT_PORT} }, () => { console.log(JSON.stringify({ connected: true })); s.destroy(); }); s.on('error', (e) => console.log(JSON.stringify({ error: e.code })));`;
      const child = lab.spawn('web', [process.execPath, '-e', script]);
      try {
        return (await child.waitFor(() => true, ms)).connected === true;
      } catch {
        return false;
      } finally {
        // Its socket goes with it: nothing it sent again reaches the checks below.
        await child.stop('SIGKILL', 2_000);
      }
    };
    // Drops web's SYNs from CLIENT_PORT as they reach api (its raw table, before its stack): api
    // holds no half-open connection of that port, which would answer the later SYN for the first.
    const dropSyns = ['iptables', '-t', 'raw', '-I', 'PREROUTING', '-p', 'tcp', '--sport', String(CLIENT_PORT), '--dport', String(PORT), '-j', 'DROP'];
    try {
      assert.equal((await fast(web)).conntrack.skipped, false);
      // A first contact from CLIENT_PORT whose SYN never arrives: web's conntrack keeps its entry
      // (SYN_SENT), marked `track` by web's verdict.
      await flushCaches(web.socket);
      lab.exec('api', dropSyns);
      try {
        assert.equal(await fromClientPort(1_500), false);
      } finally {
        lab.exec('api', dropSyns.map((word) => (word === '-I' ? '-D' : word)));
      }
      const entry = lab.exec('web', ['cat', '/proc/net/nf_conntrack']).split('\n').find((line) => line.includes(`sport=${CLIENT_PORT} dport=${PORT} `));
      const track = connectionMarks().track;
      assert.ok(entry !== undefined && (Number(/ mark=(\d+)/.exec(entry)?.[1]) & track) !== 0, `the entry is marked track: ${String(entry)}`);
      // The pair is known to both kernels again.
      assert.equal(await http(), true);
      await connectsInKernel();
      const [before, mark] = [await fast(web), web.process.lines.length];
      const connected = await fromClientPort(5_000);
      const judged = web.process.lines.slice(mark).filter((line) => line.msg === 'handshake verdict');
      assert.equal(connected, true, `web's verdicts: ${JSON.stringify(judged)}; its kernel's counters moved: ${JSON.stringify(countersMoved(before, await fast(web)))}; conntrack: ${String(lab.exec('web', ['cat', '/proc/net/nf_conntrack']).split('\n').find((line) => line.includes(`sport=${CLIENT_PORT} dport=${PORT} `)))}`);
      const refused = judged.filter((line) => line.verdict === 'drop');
      assert.deepEqual(refused, [], 'web\'s agent refused nothing');
      assert.deepEqual(countersMoved(before, await fast(web)), { synSent: 1, synAckVerified: 1 });
    } finally {
      await web.process.stop('SIGTERM');
      web = await lab.startAgent('web', ['--config', fixture.files.configs.web]);
    }
  });

  it('a workload that connects through its own host\'s DNAT (a local service address, IPv4 and IPv6) speaks as itself, in the kernel: its host writes its fast option into the SYN after the DNAT; so does a uid\'s connection', async () => {
    const reports = `spiffe://${DOMAIN}/web-reports`;
    const subjectOf = (line: Record<string, unknown>) => (line.peer as { subject?: string } | null)?.subject;
    // A service address on web's link that web's own nat table sends on to api (as kube-proxy
    // does for a node's own connections); web's agent starts with the rules in place (conntrack
    // kept, and uids' connects name themselves for the rules after the DNAT).
    const services = [
      { family: 4, address: lab.address('api').replace(/\d+$/, '200'), command: 'iptables', to: `${lab.address('api')}:${PORT}` },
      { family: 6, address: lab.address('api', 6).replace(/[0-9a-f]+$/, '200'), command: 'ip6tables', to: `[${lab.address('api', 6)}]:${PORT}` },
    ];
    const rules = services.map(({ address, command, to }) => [command, '-t', 'nat', '-A', 'OUTPUT', '-d', address, '-p', 'tcp', '--dport', '80', '-j', 'DNAT', '--to-destination', to]);
    await web.process.stop('SIGTERM');
    for (const rule of rules) lab.exec('web', rule);
    try {
      web = await lab.startAgent('web', ['--config', fixture.files.configs.web]);
      assert.match((await fast(web)).serviceSyns?.reason ?? '', /^judged after the DNAT, by the bpf match in mangle POSTROUTING$/);
      const viaService = async (address: string, workload?: string) => (await lab.peerOnce('web', ['http', address, '80'], 5_000, undefined, workload).catch(() => null))?.status === 200;
      // Each learns api's entry through the DNAT at its first connection there, if it had none.
      for (const { address } of services) {
        assert.equal(await viaService(address, REPORTS_WORKLOAD), true, `reports through ${address}`);
        assert.equal(await viaService(address), true, `web's own uid through ${address}`);
      }
      const mark = api.process.lines.length;
      const [apiQueued, webQueued, apiBefore, webBefore] = [await queued(api), await queued(web), await fast(api), await fast(web)];
      const rounds = 3;
      for (const { family, address } of services) {
        for (let i = 0; i < rounds; i++) assert.equal(await viaService(address, REPORTS_WORKLOAD), true, `IPv${family} connection ${i} of reports through the service address`);
        assert.equal(await viaService(address), true, `IPv${family} connection of web's uid through the service address`);
      }
      const connections = services.length * (rounds + 1);
      // Queued nowhere: the SYN left web with the fast option its tc egress program wrote after
      // the DNAT, and api's kernel proved it.
      assert.deepEqual([await queued(api), await queued(web)], [apiQueued, webQueued], 'neither agent queued a packet');
      assert.deepEqual(countersMoved(webBefore, await fast(web)), { synSent: connections, synAckVerified: connections });
      assert.deepEqual(countersMoved(apiBefore, await fast(api)), { synAccepted: connections, synAckSigned: connections });
      // Each as its own workload, found at its SYN after the DNAT by its source and sequence
      // number (fast_owners), which the DNAT keeps: reports by its cgroup, the rest by uid.
      const verdicts = () => api.process.lines.slice(mark).filter((l) => l.msg === 'handshake verdict' && l.path === 'kernel' && l.reason === 'ok-kernel');
      await waitUntil('api logs the kernel verdicts', () => Promise.resolve(verdicts().length >= connections), 5_000);
      const subjects = verdicts().map(subjectOf);
      assert.equal(subjects.filter((subject) => subject === reports).length, services.length * rounds, JSON.stringify(subjects));
      assert.equal(subjects.filter((subject) => subject !== reports).length, services.length, JSON.stringify(subjects));
      assert.ok(verdicts().some((l) => String(l.source).startsWith(`${canonicalAddress(lab.address('web', 6))}:`)), 'IPv6 among them');
    } finally {
      await web.process.stop('SIGTERM');
      for (const rule of rules) lab.exec('web', rule.map((word) => (word === '-A' ? '-D' : word)));
      web = await lab.startAgent('web', ['--config', fixture.files.configs.web]);
    }
  });

  it('NAT rules added after the agents started: from their next rule check, connections the kernel judges keep conntrack, so the rules translate them (a server\'s redirect, whose listener answers with the MAC of the entry that proved the SYN), and a uid\'s connection through its host\'s DNAT goes fast; a connection judged before goes on untracked', async () => {
    const service = lab.address('api').replace(/\d+$/, '201');
    // On api, web's connections to the echo port go to another HTTP server instead (a redirect
    // the tc program judges at the port the SYN names, 7000, before it), on a port no entry of
    // api's names; on web, a service address.
    const redirected = 7002;
    const redirectedServer = lab.peer('api', ['server', String(redirected), 'http']);
    await redirectedServer.waitFor((l) => l.listening === redirected);
    const redirect = ['iptables', '-t', 'nat', '-A', 'PREROUTING', '-s', lab.address('web'), '-p', 'tcp', '--dport', String(ECHO), '-j', 'REDIRECT', '--to-ports', String(redirected)];
    const dnat = ['iptables', '-t', 'nat', '-A', 'OUTPUT', '-d', service, '-p', 'tcp', '--dport', '80', '-j', 'DNAT', '--to-destination', `${lab.address('api')}:${PORT}`];
    for (const agent of [api, web]) assert.deepEqual((await fast(agent)).conntrack, { skipped: true, reason: 'skipped (auto), by nftables' });
    assert.match((await fast(web)).serviceSyns?.reason ?? '', /; no NAT rules at start: a uid's connection through a later one goes fast from the rule check that finds it$/);
    // Both ports known to web's uid first (first contact, or fast already).
    assert.equal(await http(), true);
    assert.equal((await lab.peerOnce('web', ['echo', lab.address('api'), String(ECHO), 'before'])).echoed, 'before');
    const held = lab.peer('web', ['hold', lab.address('api'), String(ECHO)], { stdin: true });
    const heldPort = Number((await held.waitFor((l) => l.connected === true)).localPort);
    assert.equal(conntrackEntry('api', heldPort), undefined, 'the held connection is untracked');
    try {
      lab.exec('api', redirect);
      lab.exec('web', dnat);
      const kept = /^kept from \S+: this network namespace has NAT rules now \(auto\); connections judged before stay out of conntrack$/;
      await waitUntil('both agents find the NAT rules', async () => kept.test((await fast(api)).conntrack.reason) && kept.test((await fast(web)).conntrack.reason), 15_000);
      for (const agent of [api, web]) assert.equal((await fast(agent)).conntrack.skipped, false);
      assert.equal((await fast(web)).serviceSyns?.reason, 'judged after the DNAT, by the bpf match in mangle POSTROUTING');
      const found = await api.process.waitFor((l) => l.msg === 'NAT rules found after start: the kernel fast path follows them from now on', 1_000);
      assert.equal((found.conntrack as { skipped: boolean }).skipped, false);

      // Through api's redirect, proven in its kernel: a fast SYN to 7000 answered by the HTTP
      // server on 7002. Its SYN-ACK carries the MAC under the key of the entry that proved the SYN
      // (its record in fast_replay): no entry names port 7002.
      const entriesFor7002 = dumpPinnedMap(join(lab.pinDir('api'), 'fast_servers')).filter(({ key }) => key.readUInt16LE(36) === redirected);
      assert.deepEqual(entriesFor7002, [], 'api holds no entry for the port the redirect chose');
      const [apiQueued, webQueued, apiBefore, webBefore] = [await queued(api), await queued(web), await fast(api), await fast(web)];
      const answered = await lab.peerOnce('web', ['http', lab.address('api'), String(ECHO)], 5_000).catch(() => null);
      assert.equal(answered?.status, 200, 'the redirect applied to the fast connection');
      assert.deepEqual(countersMoved(apiBefore, await fast(api)), { synAccepted: 1, synAckSigned: 1 });
      const tracked = lab.exec('api', ['cat', '/proc/net/nf_conntrack']).split('\n').filter((line) => line.includes(`dport=${ECHO} `) && line.includes(`sport=${redirected} `));
      assert.equal(tracked.length, 1, 'api\'s conntrack holds the redirected connection');
      // web's uid through web's own DNAT: its host writes the fast option after the DNAT.
      const viaService = await lab.peerOnce('web', ['http', service, '80'], 5_000).catch(() => null);
      assert.equal(viaService?.status, 200, 'through the service address');
      assert.deepEqual(countersMoved(webBefore, await fast(web)), { synSent: 2, synAckVerified: 2 });
      assert.deepEqual([await queued(api), await queued(web)], [apiQueued, webQueued], 'neither agent queued a packet');

      // The connection judged before the rules: still untracked, and its data still flows.
      held.write('still here?\n');
      await held.waitFor((l) => l.echoed === 'still here?');
      assert.equal(conntrackEntry('api', heldPort), undefined, 'the held connection stays untracked');
    } finally {
      await held.stop();
      await redirectedServer.stop();
      lab.exec('api', redirect.map((word) => (word === '-A' ? '-D' : word)));
      lab.exec('web', dnat.map((word) => (word === '-A' ? '-D' : word)));
      // The next tests find agents that skip conntrack, as the suite started them.
      await api.process.stop('SIGTERM');
      await web.process.stop('SIGTERM');
      api = await startApi();
      web = await lab.startAgent('web', ['--config', fixture.files.configs.web]);
    }
  });

  it('a policy edit revokes a known pair from its next fast SYN, and restoring it lets the pair back', async () => {
    assert.equal(await http(), true);
    const mark = api.process.lines.length;
    writeFileSync(join(policies, 'api.yaml'), apiPolicyText.replace('ports: [7000, 8080]', 'ports: [7000]'));
    await api.process.waitFor((l) => l.msg === 'policy reloaded' && api.process.lines.indexOf(l) >= mark, 10_000);
    const before = await fast(api);
    assert.equal(await http(4, 2_500), false, 'port 8080 is no longer allowed');
    assert.ok((countersMoved(before, await fast(api)).synNotAllowed ?? 0) >= 1, 'the kernel dropped the fast SYN as not allowed');

    const restored = api.process.lines.length;
    writeFileSync(join(policies, 'api.yaml'), apiPolicyText);
    await api.process.waitFor((l) => l.msg === 'policy reloaded' && api.process.lines.indexOf(l) >= restored, 10_000);
    const again = await fast(api);
    assert.equal(await http(), true);
    assert.equal(countersMoved(again, await fast(api)).synAccepted, 1, 'fast again from the next SYN');
  });

  it('a key rotation on api: the next fast SYN is still accepted and tells web to learn api anew, and whois still names api on that connection; one queued handshake later the pair is fast again, with no fallback', async () => {
    assert.equal(await http(), true);
    await rotateAgent(fixture.files, 'api', api);
    const [apiBefore, webBefore, apiQueued, webQueued, webEntries] = [await fast(api), await fast(web), await queued(api), await queued(web), await clientEntries(web)];
    // A fast connection under the keys api had before, held open.
    const held = lab.peer('web', ['hold', lab.address('api'), String(PORT)], { stdin: true });
    const webEnd = `${lab.address('web')}:${String((await held.waitFor((l) => l.connected === true)).localPort)}`;
    assert.deepEqual(countersMoved(apiBefore, await fast(api)), { synAccepted: 1, synAckSigned: 1 });
    assert.deepEqual(countersMoved(webBefore, await fast(web)), { synSent: 1, synAckVerified: 1, clientRetired: 1 });
    assert.deepEqual([await queued(api), await queued(web)], [apiQueued, webQueued], 'nothing queued');
    // The kernel's event tells web's agent, whose table follows the kernel's.
    await waitUntil('web forgets the retired entry', async () => (await clientEntries(web)) === webEntries - 1, 3_000);
    // It keeps the retired entry's server for whois: the connection it proved is still api's.
    const asked = JSON.parse(
      execFileSync('ip', ['netns', 'exec', lab.namespace('web'), ...synpassCommand(), 'whois', webEnd, `${lab.address('api')}:${String(PORT)}`, '--socket', lab.whoisSocket('web')], { cwd: ROOT, encoding: 'utf8' }),
    ) as { identity: { subject: string } };
    assert.equal(asked.identity.subject, `spiffe://${DOMAIN}/api`);
    assert.equal(((await web.status()) as unknown as { tables: Record<string, { entries: number }> }).tables['kernel-retired-clients']?.entries, 1);
    await held.stop();
    // web's kernel dropped its entry, so its next connect is queued: a handshake under api's new keys.
    const [apiRelearn, webRelearn] = [await fast(api), await fast(web)];
    assert.equal(await http(), true);
    assert.deepEqual(countersMoved(webRelearn, await fast(web)), {}, 'no fast SYN sent, none fell back');
    assert.deepEqual(countersMoved(apiRelearn, await fast(api)), {});
    assert.ok((await queued(api)) > apiQueued && (await queued(web)) > webQueued, 'the handshake was queued on both sides');
    assert.equal(await clientEntries(web), webEntries, 'web learned api again');
    const again = await fast(api);
    assert.equal(await http(), true);
    assert.deepEqual(countersMoved(again, await fast(api)), { synAccepted: 1, synAckSigned: 1 });
  });

  /** api's agent started again as the lab started it, with `args` added. */
  function startApi(...args: string[]): Promise<AgentHandle> {
    return lab.startAgent('api', ['--config', fixture.files.configs.api, ...args], { SYNPASS_DATAPATH_QUEUE_RATE_PER_SOURCE: String(SOURCE_RATE) });
  }

  /** The restarted agent's log line of what it put back from the saved tables. */
  function restoredTables(agent: AgentHandle): { servers?: { restored: number }; clients?: { restored: number } } | undefined {
    return agent.process.lines.find((line) => line.msg === "kernel fast path: the previous run's tables restored");
  }

  /** One connection from web to api, judged by both kernels: a fast SYN accepted and a signed SYN-ACK verified, nothing queued. */
  async function connectsInKernel(): Promise<void> {
    const [apiBefore, webBefore, apiQueued, webQueued] = [await fast(api), await fast(web), await queued(api), await queued(web)];
    assert.equal(await http(), true);
    assert.deepEqual(countersMoved(apiBefore, await fast(api)), { synAccepted: 1, synAckSigned: 1 });
    assert.deepEqual(countersMoved(webBefore, await fast(web)), { synSent: 1, synAckVerified: 1 });
    assert.deepEqual([await queued(api), await queued(web)], [apiQueued, webQueued], 'nothing queued');
  }

  it('an agent restart keeps what peers proved: the next fast SYN is accepted at once, by a service that listened under the previous run', async () => {
    assert.equal(await http(), true);
    await api.process.stop('SIGTERM');
    const savedFile = lab.savedTablesFile('api');
    assert.ok(existsSync(savedFile), 'the stopping agent saved its server table');
    assert.equal(statSync(savedFile).mode & 0o777, 0o600);
    api = await startApi();
    const restored = restoredTables(api);
    assert.ok(restored?.servers !== undefined && restored.servers.restored >= 1, JSON.stringify(restored));
    assert.equal(existsSync(savedFile), false, 'read once and removed');
    // The listener was opened while the previous run's programs were attached: Linux keeps the
    // callback flag on the socket, so the new run's program signs its SYN-ACKs.
    await connectsInKernel();
  });

  it('a client agent\'s restart keeps what its workloads proved: their next connect is a fast SYN, nothing queued', async () => {
    assert.equal(await http(), true);
    await web.process.stop('SIGTERM');
    assert.ok(existsSync(lab.savedTablesFile('web')), 'the stopping agent saved its client table');
    web = await lab.startAgent('web', ['--config', fixture.files.configs.web]);
    const restored = restoredTables(web);
    assert.ok(restored?.clients !== undefined && restored.clients.restored >= 1, JSON.stringify(restored));
    await connectsInKernel();
  });

  it('an agent restart after a key rotation keeps what peers proved under the previous keys: the next fast SYN is accepted at once and tells web to learn api anew, with no fallback', async () => {
    await connectsInKernel();
    await rotateAgent(fixture.files, 'api', api);
    await api.process.stop('SIGTERM');
    const saved = JSON.parse(readFileSync(lab.savedTablesFile('api'), 'utf8')) as { retiring?: { entries: unknown[] } };
    assert.ok((saved.retiring?.entries.length ?? 0) >= 1, 'the stopping agent kept its previous key and the entries resting on it');
    api = await startApi();
    const restored = restoredTables(api) as { retiring?: { restored: number } } | undefined;
    assert.ok((restored?.retiring?.restored ?? 0) >= 1, JSON.stringify(restored));
    const [apiBefore, webBefore, apiQueued, webQueued, webEntries] = [await fast(api), await fast(web), await queued(api), await queued(web), await clientEntries(web)];
    assert.equal(await http(), true);
    assert.deepEqual(countersMoved(apiBefore, await fast(api)), { synAccepted: 1, synAckSigned: 1 });
    assert.deepEqual(countersMoved(webBefore, await fast(web)), { synSent: 1, synAckVerified: 1, clientRetired: 1 }, 'accepted at once, and told to learn api anew');
    assert.deepEqual([await queued(api), await queued(web)], [apiQueued, webQueued], 'nothing queued');
    // One queued handshake under api's new keys, and the pair is fast again.
    await waitUntil('web forgets the retired entry', async () => (await clientEntries(web)) === webEntries - 1, 3_000);
    assert.equal(await http(), true);
    await connectsInKernel();
  });

  it('an agent start puts a service that was already listening on the fast path (the listener sweep), and leaves a listener outside its cgroup alone', async () => {
    const OUTSIDE = ECHO + 1;
    const echo = async (text: string) => (await lab.peerOnce('web', ['echo', lab.address('api'), String(ECHO), text])).echoed;
    // With no agent on api its programs are detached: a service that begins listening now is
    // one the sock_ops program never sees begin, as at a host's boot before the agent.
    await api.process.stop('SIGTERM');
    await echoServer.stop();
    echoServer = lab.peer('api', ['server', String(ECHO), 'echo']);
    await echoServer.waitFor((l) => l.listening === ECHO);
    const outside = lab.peer('api', ['server', String(OUTSIDE), 'echo'], { outsideCgroup: true });
    try {
      await outside.waitFor((l) => l.listening === OUTSIDE);
      api = await startApi();
      const running = await api.process.waitFor((l) => l.msg === 'kernel fast path running');
      const sweep = running.listenerSweep as { enabled: number[]; alreadyEnabled: number; notRun: string | null };
      assert.deepEqual(sweep.enabled, [ECHO], JSON.stringify(sweep));
      assert.equal(sweep.notRun, null);
      // The web service on PORT began listening under an earlier run (or was swept at the first start).
      assert.ok(sweep.alreadyEnabled >= 1, JSON.stringify(sweep));
      assert.deepEqual((await fast(api)).listenerSweep, sweep);
      // Loaded, run and unloaded at start: nothing of the sweep stays in the kernel.
      assert.doesNotMatch(execFileSync('bpftool', ['prog', 'show'], { encoding: 'utf8' }), /synpass_sweep/);
      assert.doesNotMatch(execFileSync('bpftool', ['map', 'show'], { encoding: 'utf8' }), /sweep_cgroup/);
      // Whatever web still knows, one connection teaches both kernels the pair; the listener's
      // SYN-ACKs carry the ready option (or its MAC), so the next connection stays in the kernel.
      assert.equal(await echo('learn'), 'learn');
      const [before, queuedBefore] = [await fast(api), await queued(api)];
      assert.equal(await echo('fast'), 'fast');
      assert.deepEqual(countersMoved(before, await fast(api)), { synAccepted: 1, synAckSigned: 1 });
      assert.equal(await queued(api), queuedBefore, 'nothing queued');
      assert.deepEqual((await fast(api)).listenersOnQueue, []);
    } finally {
      await outside.stop();
    }
  });

  it('runs with exactly the capabilities the systemd unit grants (no CAP_PERFMON: no listener sweep); with CAP_PERFMON it sweeps; without CAP_BPF the agent says why not', async () => {
    // The unit's bounding set, as setpriv takes it: root keeps only these across exec.
    const unit = readFileSync(join(ROOT, 'deploy/systemd/synpass.service'), 'utf8');
    const granted = /^CapabilityBoundingSet=(.*)$/m.exec(unit)![1]!.trim().split(/\s+/).map((cap) => cap.replace(/^CAP_/, '').toLowerCase());
    assert.deepEqual(granted, ['bpf', 'net_admin', 'net_raw']);
    const startWith = async (caps: string[]) => {
      await api.process.stop('SIGTERM');
      api = await lab.startAgent('api', ['--config', fixture.files.configs.api], { SYNPASS_DATAPATH_QUEUE_RATE_PER_SOURCE: String(SOURCE_RATE) }, true, ['setpriv', '--bounding-set', ['-all', ...caps.map((cap) => `+${cap}`)].join(','), ...synpassCommand()]);
      const effective = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${api.process.pid}/status`, 'utf8'))![1]!;
      assert.equal(BigInt(`0x${effective}`).toString(2).replace(/0/g, '').length, caps.length, `the agent holds ${caps.length} capabilities`);
      return fast(api);
    };
    try {
      const withUnit = await startWith(granted);
      assert.equal(withUnit.running, true, withUnit.reason);
      assert.match(withUnit.listenerSweep?.notRun ?? '', /needs CAP_PERFMON/);
      // One connection teaches both kernels the pair if they do not hold it yet; then it stays
      // there (the http listener kept the setting an earlier run's programs gave it).
      assert.equal(await http(), true);
      await connectsInKernel();

      const withPerfmon = await startWith([...granted, 'perfmon']);
      assert.equal(withPerfmon.running, true, withPerfmon.reason);
      assert.equal(withPerfmon.listenerSweep?.notRun, null, JSON.stringify(withPerfmon.listenerSweep));
      assert.ok((withPerfmon.listenerSweep?.alreadyEnabled ?? 0) >= 1, JSON.stringify(withPerfmon.listenerSweep));

      const withoutBpf = await startWith(granted.filter((cap) => cap !== 'bpf'));
      assert.equal(withoutBpf.running, false);
      assert.match(withoutBpf.reason, /\(the kernel fast path needs CAP_BPF and CAP_NET_ADMIN\)$/);
      // `auto`: the queue does the work, a known pair still connects.
      assert.equal(await http(), true);
    } finally {
      await api.process.stop('SIGTERM');
      api = await startApi();
    }
  });

  it('a program the kernel refuses: the reason carries the verifier\'s own words, and nothing is left pinned', () => {
    // A tc program that reads past its map value: refused by every kernel, whatever the privileges.
    const source = join(scratch, 'refused.bpf.c');
    writeFileSync(source, [
      '#include <linux/bpf.h>',
      '#include <bpf/bpf_helpers.h>',
      'struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, __u32); __type(value, __u64); } fast_config SEC(".maps");',
      'SEC("tc") int refused(struct __sk_buff *skb) { __u32 key = 0; __u64 *value = bpf_map_lookup_elem(&fast_config, &key); return value ? value[1] : 0; }',
      'char LICENSE[] SEC("license") = "Dual BSD/GPL";',
      '',
    ].join('\n'));
    const object = join(scratch, 'refused.bpf.o');
    execFileSync('node', [join(ROOT, 'native/bpf/build.mjs'), source, object]);
    const pinDir = `${lab.pinDir('api')}-refused`;
    assert.throws(
      () => loadBinding().fastPathLoad(object, pinDir),
      (error: Error & { errno?: number }) => {
        assert.match(error.message, /^load .* \(the kernel refused the programs\): Permission denied; verifier: .*(outside of the allowed memory range|invalid access to map value)/);
        assert.equal(error.errno, 13);
        return true;
      },
    );
    assert.equal(existsSync(pinDir), false);
  });

  it('loads while signals keep interrupting its thread (Node\'s CPU profiler: SIGPROF every 100 us)', () => {
    // The verifier gives up on a pending signal; the profiler's would fail every retry.
    const pinDir = `${lab.pinDir('api')}-profiled`;
    const script = join(scratch, 'load-profiled.mts');
    writeFileSync(script, [
      `import { fastPathObjectPath, loadBinding } from ${JSON.stringify(join(ROOT, 'agent/src/native/addon.ts'))};`,
      'const binding = loadBinding();',
      'try {',
      `  const loaded = binding.fastPathLoad(fastPathObjectPath(), ${JSON.stringify(pinDir)});`,
      "  process.stdout.write(`loaded ${Object.keys(loaded.maps).length} maps`);",
      '} finally {',
      `  binding.fastPathDetach(${JSON.stringify(pinDir)});`,
      '}',
      '',
    ].join('\n'));
    const profiled = ['--cpu-prof', '--cpu-prof-interval', '100', '--cpu-prof-dir', join(scratch, 'profiles'), '--import', 'tsx', script];
    const output = execFileSync(process.execPath, profiled, { cwd: ROOT, encoding: 'utf8' });
    assert.match(output, /^loaded \d+ maps$/);
    assert.ok(readdirSync(join(scratch, 'profiles')).some((name) => name.endsWith('.cpuprofile')), 'the profiler ran');
    assert.equal(existsSync(pinDir), false);
  });

  it('a policy edit judges a large table again in slices, the event loop free between them, and the kernel has every verdict at the end', async () => {
    const pinDir = `${lab.pinDir('api')}-rejudge`;
    const path = KernelFastPath.load({ pinDir, cgroup: '/', interfaces: [], excluded: [], windowSeconds: 30, acceptMark: 0x100, clientMark: 0x200, newInterfaces: null, acceptSample: 0, sourceRate: 0, sourceBurst: 0, budgetMark: 0x400, workloadCgroups: [] });
    try {
      const count = 4000;
      const local = { 'app.name': 'api' };
      for (let i = 0; i < count; i++) {
        const peer = { trustDomain: 'd', subject: 'spiffe://d/web', attributes: { 'app.name': 'web' }, provenance: {}, agent: 'spiffe://d/agent/web', expiresAt: 2e9 };
        assert.ok(path.admitClient({ fast: { fastId: i, key: Buffer.alloc(16, 1) }, peer, local, expiresAt: 2e9, credential: {} as never, tokenSignature: new Uint8Array(64), peerAddress: `10.213.${i >> 8}.${i & 255}`, localAddress: '10.213.0.2', port: 8080 }));
      }
      // A policy that now refuses every peer, and takes 50 us to say so: 200 ms in all.
      const refusing = (): Authorization => {
        const until = performance.now() + 0.05;
        while (performance.now() < until);
        return { allowed: false, rule: 'deny', revision: 'r2', wouldDrop: null, unrestricted: false };
      };
      const authorizer: Authorizer = { ingress: refusing, egress: refusing, memoSize: { entries: 0, capacity: 0 }, closedToAnonymous: () => false };
      let served = 0;
      const started = performance.now();
      path.reauthorize(authorizer, () => local);
      assert.ok(performance.now() - started < REJUDGE_SLICE_MS + 50, 'the call returned after its first slice');
      assert.equal(path.rejudging, true);
      const ticks = setInterval(() => (served += 1), 1);
      await path.rejudged;
      clearInterval(ticks);
      assert.equal(path.rejudging, false);
      assert.ok(path.lastRejudging !== null && path.lastRejudging.slices >= 10, `slices: ${path.lastRejudging?.slices}`);
      assert.ok(served >= 10, `the event loop ran timers between slices (${served})`);
      const dumped = dumpPinnedMap(join(pinDir, 'fast_servers'));
      assert.equal(dumped.length, count);
      // struct server_value: key (16 bytes), then allowed (u32).
      assert.equal(dumped.filter((entry) => entry.value[16] !== 0).length, 0, 'every entry refused in the kernel');
    } finally {
      KernelFastPath.detach(pinDir);
    }
    assert.equal(existsSync(pinDir), false);
  });

  it('a key rotation and a flush of large tables reach the kernel in slices; an entry admitted meanwhile is neither retired nor deleted', async () => {
    const pinDir = `${lab.pinDir('api')}-backlog`;
    const path = KernelFastPath.load({ pinDir, cgroup: '/', interfaces: [], excluded: [], windowSeconds: 30, acceptMark: 0x100, clientMark: 0x200, newInterfaces: null, acceptSample: 0, sourceRate: 0, sourceBurst: 0, budgetMark: 0x400, workloadCgroups: [] });
    const dump = (map: string) => dumpPinnedMap(join(pinDir, map));
    // struct server_value: key (16 bytes), allowed, retiring, expires (u32 each, host order).
    const field = (value: Buffer, offset: number) => value.readUInt32LE(offset);
    const peer = { trustDomain: 'd', subject: 'spiffe://d/web', attributes: { 'app.name': 'web' }, provenance: {}, agent: 'spiffe://d/agent/web', expiresAt: 2e9 };
    const proven = (i: number) => ({ fast: { fastId: i, key: Buffer.alloc(16, 1) }, peer, local: { 'app.name': 'api' }, expiresAt: 2e9, credential: {} as never, tokenSignature: new Uint8Array(64) });
    const admit = (i: number) => path.admitClient({ ...proven(i), peerAddress: `10.213.${i >> 8}.${i & 255}`, localAddress: '10.213.0.2', port: 8080 });
    const caughtUp = async () => {
      let served = 0;
      const ticks = setInterval(() => (served += 1), 1);
      while (path.backlogSize > 0) await sleep(1);
      clearInterval(ticks);
      return served;
    };
    try {
      const count = 20_000;
      for (let i = 0; i < count; i++) {
        assert.ok(admit(i));
        assert.ok(path.useServer({ ...proven(i), serverAddress: `10.214.${i >> 8}.${i & 255}`, port: 8080, owner: { uid: i, workload: 0 } }));
      }
      const until = 1_900_000_000;
      let started = performance.now();
      path.retire(until);
      assert.ok(performance.now() - started < BACKLOG_SLICE_MS + 50, 'the rotation returned after its first slice');
      assert.ok(path.backlogSize > 0, 'the kernel had not caught up when the call returned');
      // Rests on the new keys: not retired when the backlog reaches it, and saved for a restart.
      assert.ok(admit(count));
      assert.equal(path.serversToSave().length, 1, 'only the entry admitted after the rotation is saved under the current keys');
      assert.equal(path.serversToSave('previous').length, count, 'the others under the previous keys, which the agent keeps while they last');
      assert.ok((await caughtUp()) >= 5, 'the event loop ran timers while the kernel caught up');
      const servers = dump('fast_servers');
      assert.equal(servers.length, count + 1);
      const retired = servers.filter((entry) => field(entry.value, 20) === 1 && field(entry.value, 24) === until);
      assert.equal(retired.length, count, 'every older entry retiring until the previous credential ends');
      const current = servers.filter((entry) => field(entry.value, 20) === 0 && field(entry.value, 24) === 2e9);
      assert.equal(current.length, 1, 'the entry admitted after the rotation keeps its own expiry and is not retiring');
      assert.equal(dump('fast_clients').length, 0, 'every client entry deleted');

      started = performance.now();
      path.forgetAll();
      assert.ok(performance.now() - started < BACKLOG_SLICE_MS + 50, 'the flush returned after its first slice');
      assert.ok(path.backlogSize > 0);
      // A first contact right after the flush: its entry must outlive the flush's deletions.
      assert.ok(admit(count - 1));
      await caughtUp();
      const left = dump('fast_servers');
      assert.equal(left.length, 1, 'the flush deleted every entry but the one admitted after it');
      assert.equal(field(left[0]!.value, 20), 0, 'and that one is not retiring');

      // A flush during a policy edit's walk: the walk judges nothing of the flushed table, so
      // it writes back none of its entries.
      for (let i = 0; i < 2000; i++) admit(i);
      const refusing = (): Authorization => {
        const until = performance.now() + 0.05;
        while (performance.now() < until);
        return { allowed: false, rule: 'deny', revision: 'r2', wouldDrop: null, unrestricted: false };
      };
      path.reauthorize({ ingress: refusing, egress: refusing, memoSize: { entries: 0, capacity: 0 }, closedToAnonymous: () => false }, () => ({ 'app.name': 'api' }));
      assert.equal(path.rejudging, true);
      path.forgetAll();
      await path.rejudged;
      await caughtUp();
      assert.equal(dump('fast_servers').length, 0, 'nothing the walk judged after the flush came back');
    } finally {
      KernelFastPath.detach(pinDir);
    }
    assert.equal(existsSync(pinDir), false);
  });

  it('a node\'s pods as clients: a number each in fast_pods, their entries keyed by it, gone with the pod\'s token and the number given back; a pod whose fast SYN went unvouched gets none', () => {
    const pinDir = `${lab.pinDir('api')}-pods`;
    const path = KernelFastPath.load({ pinDir, cgroup: '/', interfaces: [], excluded: [], windowSeconds: 30, acceptMark: 0x100, clientMark: 0x200, newInterfaces: null, acceptSample: 0, sourceRate: 0, sourceBurst: 0, budgetMark: 0x400, workloadCgroups: [], routedWorkloads: true, podMark: 0x900 });
    const dump = (map: string) => dumpPinnedMap(join(pinDir, map));
    /** fast_pods as IPv4 address -> pod number (struct pod_key: ::ffff:a.b.c.d). */
    const numbered = () => Object.fromEntries(dump('fast_pods').map((entry) => [mappedIpv4(entry.key) ?? 'IPv6', entry.value.readUInt32LE(0)] as const));
    /** The owner of each fast_clients entry (struct client_key: owner_kind u16 at 18, owner u32 at 20), sorted. */
    const owners = () => dump('fast_clients').map((entry) => `${entry.key[18]}:${entry.key.readUInt32LE(20)}`).sort();
    const signature = (fill: number) => new Uint8Array(64).fill(fill);
    const peer = { trustDomain: 'd', subject: 'spiffe://d/api', attributes: {}, provenance: {}, agent: 'spiffe://d/agent/api', expiresAt: 2e9 };
    const entry = (server: number, pod: string, token: number) => ({ fast: { fastId: server, key: Buffer.alloc(16, 1) }, peer, local: {}, expiresAt: 2e9, credential: {} as never, tokenSignature: signature(token), serverAddress: `10.214.0.${server}`, port: 8080, owner: { uid: -1, workload: 0, pod } });
    const [podA, podB] = ['10.215.1.1', '10.215.1.2'];
    try {
      assert.ok(path.useServer(entry(1, podA, 1)));
      assert.ok(path.useServer(entry(2, podA, 1)));
      assert.ok(path.useServer(entry(1, podB, 2)));
      assert.deepEqual(numbered(), { [podA]: 1, [podB]: 2 });
      assert.deepEqual(owners(), ['2:1', '2:1', '2:2']);
      assert.equal(path.tables()['kernel-pods']?.entries, 2);
      // Pod A's token was issued again (relabelled); pod B's is the one its entry rests on.
      path.podTokensChanged((address) => (address === podB ? signature(2) : signature(9)));
      assert.deepEqual([numbered(), owners()], [{ [podB]: 2 }, ['2:2']]);
      // Pod B is gone.
      path.podTokensChanged(() => undefined);
      assert.deepEqual([numbered(), owners()], [{}, []]);
      // A number is never given twice in a run: what the kernel may still hold under an old one names no pod.
      assert.ok(path.useServer(entry(1, podA, 9)));
      assert.deepEqual(numbered(), { [podA]: 3 });
      // Pod A's fast SYN reached the queue unvouched: its entries go, and it gets none; pod B still does.
      path.podUnvouched(podA);
      assert.deepEqual([numbered(), owners()], [{}, []]);
      assert.equal(path.useServer(entry(2, podA, 9)), false);
      assert.ok(path.useServer(entry(2, podB, 4)));
      assert.deepEqual(numbered(), { [podB]: 4 });
      // Pods' entries are this run's: not saved for the next.
      assert.deepEqual(path.clientsToSave(), []);
    } finally {
      KernelFastPath.detach(pinDir);
    }
    assert.equal(existsSync(pinDir), false);
  });

  it('a node\'s pairs of pods: held in fast_pod_pairs until either pod\'s token changes, a policy edit refuses the pair, it expires, or the caches are flushed; a host that is no node holds none', async () => {
    const pinDir = `${lab.pinDir('api')}-pod-pairs`;
    const options = { pinDir, cgroup: '/', interfaces: [], excluded: [], windowSeconds: 30, acceptMark: 0x100, clientMark: 0x200, newInterfaces: null, acceptSample: 0, sourceRate: 0, sourceBurst: 0, budgetMark: 0x400, workloadCgroups: [] };
    let nowMs = Date.now();
    const path = KernelFastPath.load({ ...options, routedWorkloads: true, podMark: 0x900, now: () => nowMs });
    /** fast_pod_pairs over IPv4 (struct pod_pair_key: client, server, port), as `client>server:port` -> the second it expires. */
    const held = () => Object.fromEntries(dumpPinnedMap(join(pinDir, 'fast_pod_pairs')).map(({ key, value }) => [ipv4PodPair(key) ?? 'IPv6', value.readUInt32LE(0)] as const));
    const identity = (name: string) => ({ trustDomain: 'd', subject: `spiffe://d/${name}`, attributes: { 'app.name': name }, provenance: {}, agent: 'spiffe://d/agent/node', expiresAt: 2e9 });
    const signature = (fill: number) => new Uint8Array(64).fill(fill);
    const tokens = new Map([['10.215.1.1', signature(1)], ['10.215.1.2', signature(2)], ['10.215.1.3', signature(3)]]);
    const pair = (client: string, server: string, expiresAt = 2e9) => ({ clientAddress: client, serverAddress: server, port: 8080, client: identity(client), server: identity(server), clientTokenSignature: tokens.get(client)!, serverTokenSignature: tokens.get(server)!, expiresAt });
    const refusing = (refused: string): Authorizer => {
      const decide = ({ peer }: { peer: { subject: string } | null }): Authorization => ({ allowed: peer?.subject !== `spiffe://d/${refused}`, rule: 'r', revision: 'r2', wouldDrop: null, unrestricted: false });
      return { ingress: decide, egress: decide, memoSize: { entries: 0, capacity: 0 }, closedToAnonymous: () => false };
    };
    try {
      assert.ok(path.admitPodPair(pair('10.215.1.1', '10.215.1.2')));
      assert.ok(path.admitPodPair(pair('10.215.1.3', '10.215.1.2', 1_900_000_000.5)));
      assert.ok(path.admitPodPair(pair('10.215.1.2', '10.215.1.3')));
      assert.deepEqual(held(), { '10.215.1.1>10.215.1.2:8080': 2e9, '10.215.1.3>10.215.1.2:8080': 1_900_000_000, '10.215.1.2>10.215.1.3:8080': 2e9 });
      assert.equal(path.tables()['kernel-pod-pairs']?.entries, 3);
      // A policy edit that refuses pod 1 as a peer (its ingress to pod 2): its pair goes, the others stay.
      path.reauthorize(refusing('10.215.1.1'), () => ({}));
      await path.rejudged;
      assert.deepEqual(Object.keys(held()).sort(), ['10.215.1.2>10.215.1.3:8080', '10.215.1.3>10.215.1.2:8080']);
      // Pod 3 was relabelled (a new token): both its pairs go, whichever end it is.
      tokens.set('10.215.1.3', signature(9));
      path.podTokensChanged((address) => tokens.get(address));
      assert.deepEqual(held(), {});
      // Entries end with the earlier of the two pods' tokens.
      assert.ok(path.admitPodPair(pair('10.215.1.1', '10.215.1.2', nowMs / 1000 + 5)));
      assert.ok(path.admitPodPair(pair('10.215.1.2', '10.215.1.1')));
      nowMs += 6_000;
      path.tick();
      assert.deepEqual(Object.keys(held()), ['10.215.1.2>10.215.1.1:8080']);
      path.forgetAll();
      assert.deepEqual([held(), path.tables()['kernel-pod-pairs']?.entries], [{}, 0]);
    } finally {
      KernelFastPath.detach(pinDir);
    }
    // A host that is no node: no pairs, and no such table in its status.
    const host = KernelFastPath.load({ ...options, pinDir: `${pinDir}-host` });
    try {
      assert.equal(host.admitPodPair(pair('10.215.1.1', '10.215.1.2')), false);
      assert.equal(host.tables()['kernel-pod-pairs'], undefined);
    } finally {
      KernelFastPath.detach(`${pinDir}-host`);
    }
    assert.equal(existsSync(pinDir), false);
  });

  it('writes and deletes map entries in batches: a full map refuses only what does not fit, an absent key is skipped', () => {
    const pinDir = `${lab.pinDir('api')}-batches`;
    const binding = loadBinding();
    const loaded = binding.fastPathLoad(fastPathObjectPath(), pinDir);
    try {
      // fast_workloads: a hash map of 1024 entries, cgroup id (8 bytes) -> workload (4 bytes).
      const fd = loaded.maps.fast_workloads!;
      const count = 1030;
      const keys = Buffer.alloc(count * 8);
      const values = Buffer.alloc(count * 4);
      for (let i = 0; i < count; i++) {
        keys.writeBigUInt64LE(BigInt(i + 1), i * 8);
        values.writeUInt32LE(i + 7, i * 4);
      }
      assert.deepEqual(binding.mapWriteBatch(fd, keys, 8, values, 4), [1024, 1025, 1026, 1027, 1028, 1029]);
      assert.equal(binding.mapCount(fd, 8), 1024);
      const value = Buffer.alloc(4);
      assert.equal(binding.mapLookup(fd, keys.subarray(1023 * 8, 1024 * 8), value), true);
      assert.equal(value.readUInt32LE(), 1023 + 7);
      // Rewriting entries already there needs no room.
      values.fill(1);
      assert.deepEqual(binding.mapWriteBatch(fd, keys.subarray(0, 10 * 8), 8, values.subarray(0, 10 * 4), 4), []);
      assert.equal(binding.mapLookup(fd, keys.subarray(0, 8), value), true);
      assert.equal(value.readUInt32LE(), 0x01010101);
      // Keys 1024.. were refused, so they are absent: deleting all 1030 deletes 1024.
      assert.equal(binding.mapDeleteBatch(fd, keys, 8), 1024);
      assert.equal(binding.mapCount(fd, 8), 0);
      assert.throws(() => binding.mapWriteBatch(fd, keys.subarray(0, 12), 8, values.subarray(0, 4), 4), RangeError);
    } finally {
      binding.fastPathDetach(pinDir);
    }
    assert.equal(existsSync(pinDir), false);
  });

  it('without the saved table (`off`), a restarted agent\'s clients fall back to first contact once, then the pair is fast again', async () => {
    await api.process.stop('SIGTERM');
    api = await startApi('--fast-path-state-file', 'off');
    const [apiBefore, webBefore] = [await fast(api), await fast(web)];
    assert.equal(await http(), true, 'completes through first contact after one retransmission timeout');
    assert.equal(countersMoved(apiBefore, await fast(api)).synUnknownPeer, 1);
    assert.equal(countersMoved(webBefore, await fast(web)).synFallback, 1);
    const again = await fast(api);
    assert.equal(await http(), true);
    assert.deepEqual(countersMoved(again, await fast(api)), { synAccepted: 1, synAckSigned: 1 });
  });

  /** What bpftool says, as JSON. */
  function bpftool(...args: string[]): unknown {
    return JSON.parse(execFileSync('bpftool', ['-j', ...args], { encoding: 'utf8' }));
  }

  /** A host's kernel counters read from its pins (or another pin of the map), as they stand with no agent to report them. */
  function pinnedCounters(host: 'api' | 'web', pin = join(lab.pinDir(host), 'fast_counters')): Pick<FastStatus, 'counters'> {
    const dump = bpftool('map', 'dump', 'pinned', pin) as { formatted: { key: number; values: { value: number }[] } }[];
    return { counters: Object.fromEntries(dump.map(({ formatted }) => [FAST_COUNTERS[formatted.key] ?? `#${formatted.key}`, formatted.values.reduce((sum, cpu) => sum + cpu.value, 0)])) };
  }

  /** One 32-bit word of a pinned fast_config (struct fast_config, native byte order), by default the host's. */
  function pinnedConfigWord(host: 'api' | 'web', offset: number, pin = join(lab.pinDir(host), 'fast_config')): number {
    const [entry] = bpftool('map', 'dump', 'pinned', pin) as { value: string[] }[];
    const bytes = Buffer.from(entry!.value.map((byte) => Number(byte)));
    return endianness() === 'LE' ? bytes.readUInt32LE(offset) : bytes.readUInt32BE(offset);
  }

  /** What the agent's start line says: whether it took over programs a previous run kept. */
  function tookOverKept(agent: AgentHandle): unknown {
    return agent.process.lines.find((line) => line.msg === 'kernel fast path running')?.tookOverKept;
  }

  /** The id of the cgroup link pinned under the host's pin directory, and the program it runs. */
  function pinnedLink(host: 'api' | 'web', name = 'sockops_link'): { id: number; prog_id: number } {
    return bpftool('link', 'show', 'pinned', join(lab.pinDir(host), name)) as { id: number; prog_id: number };
  }

  it('an agent that keeps its kernel fast path over a restart (`fastPathKeepSeconds`): while it is down its kernel still proves known pairs and cloaks, and the next start takes over with no fallback', async () => {
    await api.process.stop('SIGTERM');
    api = await startApi('--fast-path-keep-seconds', '30');
    assert.equal(tookOverKept(api), false, 'the run before detached its programs');
    // The run before kept no table (`off`): one fallback, and the pair is known again.
    assert.equal(await http(), true);
    await connectsInKernel();
    const webBefore = await fast(web);
    await api.process.stop('SIGTERM');
    assert.ok(api.process.lines.some((line) => line.msg === 'kernel fast path kept for the next start'), 'the stopping agent says it kept the fast path');
    assert.deepEqual(leftovers('api'), [`pins at ${lab.pinDir('api')}`, `sock_ops on ${lab.cgroup('api')}`, 'tcx link on api/eth0', 'tcx link on api/eth0 egress'], 'programs kept, rules gone');
    // fast_config: no `untracked` mark for raw rules that are gone (offset 36); the agent is away (52).
    assert.deepEqual([pinnedConfigWord('api', 36), pinnedConfigWord('api', 52)], [0, 1]);
    const down = pinnedCounters('api');
    assert.equal(await http(), true, 'a known pair connects while api has no agent');
    // A token-less SYN, and one with a first-contact marker, which no agent is there to check:
    // both dropped, as the rules drop them while the agent is away (failing closed).
    await send([
      plainSyn(lab.address('outsider'), lab.address('api'), PORT, 41_000, 0x2000),
      ipv4Segment({ source: lab.address('outsider'), target: lab.address('api'), sourcePort: 41_001, port: PORT, sequence: 0x2001, options: Uint8Array.from([253, 4, 0xd3, 0x50]) }),
    ]);
    assert.deepEqual(countersMoved(down, pinnedCounters('api')), { synAccepted: 1, synAckSigned: 1, synNoIdentity: 2 });
    // Connects back to back across the start: the new programs replace the kept ones only once
    // the saved tables are in their maps, so no fast SYN meets an empty table.
    const loopStarted = new Date().toISOString();
    const loop = lab.peer('web', ['rounds', lab.address('api'), String(PORT), '3000', '0']);
    const [kept, keptTcx] = [pinnedLink('api'), pinnedLink('api', 'tcx_eth0')];
    // Second pins keep the kept programs' config and counters readable once they are replaced.
    const keptPin = (name: string): string => {
      const pin = `${lab.pinDir('api')}-kept-${name}`;
      const { id } = bpftool('map', 'show', 'pinned', join(lab.pinDir('api'), name)) as { id: number };
      execFileSync('bpftool', ['map', 'pin', 'id', String(id), pin]);
      return pin;
    };
    const [keptConfig, keptCounters] = [keptPin('fast_config'), keptPin('fast_counters')];
    const keptBefore = pinnedCounters('api', keptCounters);
    let welcomed: number;
    try {
      api = await startApi();
      // The start told the kept programs it was back before loading its own: for those 100 ms
      // or so, first-contact SYNs went to its rules rather than being dropped for an absent agent.
      welcomed = pinnedConfigWord('api', 52, keptConfig);
    } finally {
      rmSync(keptConfig);
    }
    assert.equal(welcomed, 0, 'agent_away cleared in the kept config');
    const link = pinnedLink('api');
    assert.deepEqual([link.id === kept.id, link.prog_id !== kept.prog_id], [true, true], 'the kept link took the new sock_ops program in place');
    const tcx = pinnedLink('api', 'tcx_eth0');
    assert.deepEqual([tcx.id === keptTcx.id, tcx.prog_id !== keptTcx.prog_id], [true, true], 'the kept tcx link took the new tc program in place');
    assert.equal(tookOverKept(api), true, 'the start says it took over');
    assert.ok(!loop.lines.some((line) => line.ok !== undefined), 'the connect loop was still running when the new agent had started');
    /** An agent's verdicts since the loop began, other than kernel accepts. */
    const notKernelAccepts = (agent: AgentHandle): string[] =>
      agent.process.lines
        .filter((line) => line.msg === 'handshake verdict' && String(line.time) >= loopStarted && (line.verdict !== 'accept' || line.path !== 'kernel'))
        .map((line) => [line.time, line.direction, line.stage, line.verdict, line.reason, line.path, line.source].map(String).join(' '));
    const loopEnd = await loop.waitFor((line) => line.ok !== undefined, 60_000);
    assert.deepEqual(
      loopEnd,
      { ok: 3000, failed: 0 },
      `rounds that failed: ${JSON.stringify(loop.lines.filter((line) => line.failed !== undefined && line.ok === undefined))}; api since the loop began: ${JSON.stringify(notKernelAccepts(api))}; web: ${JSON.stringify(notKernelAccepts(web))}, its kernel's counters moved ${JSON.stringify(countersMoved(webBefore, await fast(web)))}`,
    );
    // (A pin left by a failure above goes with the lab.)
    const keptMoved = countersMoved(keptBefore, pinnedCounters('api', keptCounters));
    rmSync(keptCounters);
    await connectsInKernel();
    const webMoved = countersMoved(webBefore, await fast(web));
    // Seen in about one full run of fifteen, never alone (until 2026-12-06): one fallback, and no
    // SYN-ACK refused. What api's programs and agent did said where that SYN went: it left from
    // the source-NAT test's address, through a conntrack entry that test left (fixed there).
    const apiSaw = {
      keptPrograms: keptMoved,
      newPrograms: Object.fromEntries(Object.entries((await fast(api)).counters).filter(([, value]) => value !== 0)),
      started: api.process.lines.find((line) => line.msg === 'kernel fast path running')?.time,
      verdicts: notKernelAccepts(api),
    };
    assert.equal(webMoved.synFallback, undefined, `no fast SYN of web fell back (web's counters moved: ${JSON.stringify(webMoved)}; its verdicts: ${JSON.stringify(notKernelAccepts(web))}; api: ${JSON.stringify(apiSaw)})`);
  });

  it('a kept fast path judges nothing once its time is up: a fast SYN then falls back, as with no program', async () => {
    await api.process.stop('SIGTERM');
    api = await startApi('--fast-path-keep-seconds', '1');
    await connectsInKernel();
    await api.process.stop('SIGTERM');
    await sleep(2_500);
    const [down, webBefore] = [pinnedCounters('api'), await fast(web)];
    // Nothing on api judges the handshake any more; whether it completes does not matter here.
    await lab.peerOnce('web', ['http', lab.address('api'), String(PORT)], 4_000).catch(() => null);
    assert.deepEqual(countersMoved(down, pinnedCounters('api')), {}, 'api\'s kernel judged nothing');
    assert.equal(countersMoved(webBefore, await fast(web)).synFallback, 1);
    api = await startApi();
    await connectsInKernel();
  });

  it('a killed agent\'s kernel goes on judging known pairs alone, and voids each entry from the end of the credential it rests on', async () => {
    // web's new credential ends within the test; api's kernel entry for web ends with it.
    await rotateAgent(fixture.files, 'web', web, SHORT_CREDENTIAL_SECONDS);
    const credential = readFileSync(join(fixture.files.agents.web, 'credential.jwt'), 'utf8').trim();
    const endsAtMs = (decodeJws(credential).payload.exp as number) * 1000;
    assert.equal(await http(), true, 'a first contact under the new credential');
    const syn = await capturedFastSyn();
    await api.process.stop('SIGKILL');
    const webBefore = await fast(web);
    assert.equal(await http(), true, 'a known pair connects with no agent on api');
    assert.deepEqual(countersMoved(webBefore, await fast(web)), { synSent: 1, synAckVerified: 1 });
    // The same captured SYN before and after the credential's end: the entry first finds it a
    // replay, then is void, with no agent there to remove it.
    const live = pinnedCounters('api');
    await send([syn]);
    assert.deepEqual(countersMoved(live, pinnedCounters('api')), { synReplayed: 1 });
    assert.ok(Date.now() < endsAtMs, `the steps before took longer than the credential's ${SHORT_CREDENTIAL_SECONDS} s`);
    await sleep(endsAtMs - Date.now() + 1_000);
    const ended = pinnedCounters('api');
    await send([syn]);
    assert.deepEqual(countersMoved(ended, pinnedCounters('api')), { synUnknownPeer: 1 });
    // A new api agent replaces what the killed one left; web gets a lasting credential again.
    api = await startApi();
    await rotateAgent(fixture.files, 'web', web);
    assert.equal(await http(), true);
    await connectsInKernel();
  });

  /** Whether the host's pinned tcx link (Linux 6.6) holds the fast path's tc program on eth0's ingress (or its egress program on eth0's egress). */
  function tcxLinkOn(host: 'api' | 'web', hook: 'ingress' | 'egress' = 'ingress'): boolean {
    const pin = join(lab.pinDir(host), hook === 'ingress' ? 'tcx_eth0' : 'tcx_eth0:egress');
    if (!existsSync(pin) || !statSync(pin).isFile()) return false;
    const link = bpftool('link', 'show', 'pinned', pin) as { type: number | string; prog_id: number };
    const program = bpftool('prog', 'show', 'id', String(link.prog_id)) as { name: string };
    return (link.type === 11 || link.type === 'tcx') && program.name === `synpass_${hook}`;
  }

  function leftovers(host: 'api' | 'web'): string[] {
    const found: string[] = [];
    if (existsSync(lab.pinDir(host))) found.push(`pins at ${lab.pinDir(host)}`);
    const attached = execFileSync('bpftool', ['cgroup', 'show', lab.cgroup(host)], { encoding: 'utf8' });
    if (attached.includes('sock_ops')) found.push(`sock_ops on ${lab.cgroup(host)}`);
    for (const hook of ['ingress', 'egress'] as const) {
      const at = `${host}/eth0${hook === 'egress' ? ' egress' : ''}`;
      if (tcxLinkOn(host, hook)) found.push(`tcx link on ${at}`);
      if (lab.exec(host, ['tc', 'filter', 'show', 'dev', 'eth0', hook]).includes(`synpass_${hook}`)) found.push(`tc filter on ${at}`);
    }
    for (const save of ['iptables-save', 'ip6tables-save']) {
      if (lab.exec(host, [save]).includes('SYNPASS')) found.push(`${save}: synpass rules`);
    }
    if (/\binet synpass\b/.test(lab.exec(host, ['nft', 'list', 'tables']))) found.push('nftables table inet synpass');
    return found;
  }

  it('takes the tc program off a clsact filter an older version left, once its tcx link is in place', async () => {
    // An older agent's filter, left while no agent ran: our handle and priority on eth0's
    // ingress, running the program api ran (pinned here, so it outlives api's stop).
    const pinned = `/sys/fs/bpf/synpass-e2e-old-filter-${process.pid}`;
    const inApi = (...command: string[]) => execFileSync('nsenter', [`--net=/var/run/netns/${lab.namespace('api')}`, ...command], { encoding: 'utf8' });
    execFileSync('bpftool', ['prog', 'pin', 'id', String(pinnedLink('api', 'tcx_eth0').prog_id), pinned]);
    try {
      await api.process.stop('SIGTERM');
      inApi('tc', 'qdisc', 'add', 'dev', 'eth0', 'clsact');
      inApi('tc', 'filter', 'add', 'dev', 'eth0', 'ingress', 'prio', String(0x5350), 'handle', '0x5350', 'bpf', 'da', 'object-pinned', pinned);
      assert.match(inApi('tc', 'filter', 'show', 'dev', 'eth0', 'ingress'), /synpass_ingress/);
      api = await startApi();
      assert.doesNotMatch(inApi('tc', 'filter', 'show', 'dev', 'eth0', 'ingress'), /synpass_ingress/, 'the old filter is gone');
      assert.equal(tcxLinkOn('api'), true);
      await connectsInKernel();
    } finally {
      rmSync(pinned, { force: true });
      inApi('tc', 'qdisc', 'del', 'dev', 'eth0', 'clsact');
    }
  });

  it('where the tcx link cannot be had, the tc program goes on a clsact filter instead and judges from there', async () => {
    await api.process.stop('SIGTERM');
    // Directories where the links' pins go: pinning fails, and the agent falls back as on a
    // kernel before 6.6, which refuses the links themselves.
    for (const pin of ['tcx_eth0', 'tcx_eth0:egress']) mkdirSync(join(lab.pinDir('api'), pin), { recursive: true });
    const filters = (hook: 'ingress' | 'egress') => lab.exec('api', ['tc', 'filter', 'show', 'dev', 'eth0', hook]);
    try {
      api = await startApi();
      assert.deepEqual([tcxLinkOn('api'), tcxLinkOn('api', 'egress')], [false, false]);
      assert.match(filters('ingress'), /synpass_ingress/);
      assert.match(filters('egress'), /synpass_egress/);
      assert.deepEqual(((await api.status()) as unknown as { kernelFastPath: { interfaces: string[] } }).kernelFastPath.interfaces, ['eth0']);
      await connectsInKernel();
      await api.process.stop('SIGTERM');
      assert.doesNotMatch(filters('ingress'), /synpass_ingress/, 'the stop took the filter off');
      assert.doesNotMatch(filters('egress'), /synpass_egress/, 'the stop took the egress filter off');
    } finally {
      rmSync(lab.pinDir('api'), { recursive: true, force: true });
      api = await startApi();
    }
    assert.deepEqual([tcxLinkOn('api'), tcxLinkOn('api', 'egress')], [true, true]);
  });

  it('a stopped agent leaves nothing; `agent cleanup` removes what a killed agent left', async () => {
    await web.process.stop('SIGTERM');
    assert.deepEqual(leftovers('web'), []);
    await api.process.stop('SIGKILL');
    assert.deepEqual(
      leftovers('api'),
      [`pins at ${lab.pinDir('api')}`, `sock_ops on ${lab.cgroup('api')}`, 'tcx link on api/eth0', 'tcx link on api/eth0 egress', 'iptables-save: synpass rules', 'ip6tables-save: synpass rules', 'nftables table inet synpass'],
      'a killed agent leaves its pins, links, rules and notrack table',
    );
    const cleanup = lab.spawn('api', [...synpassCommand(), 'agent', 'cleanup', '--fast-path-pin-dir', lab.pinDir('api')]);
    await cleanup.waitFor((l) => typeof l.text === 'string' && l.text.startsWith('kernel fast path:'), 10_000);
    await cleanup.exited;
    assert.deepEqual(leftovers('api'), []);
  });
});
