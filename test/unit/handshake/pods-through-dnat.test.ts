// A Kubernetes node's agent and a SYN to a service address that the node DNATs to one of its
// pods: the agent meets the SYN before the DNAT (its destination the service address) and the
// pod's SYN-ACK with the pod's own address, so the pods' policy is applied where it can see
// both. Real engine and handshake on a virtual queue.
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { LocalPods } from '../../../agent/src/identity/local-identity.ts';
import type { VerifiedIdentity } from '../../../agent/src/token/identity-token.ts';
import { VirtualQueue } from '../../../agent/src/datapath/virtual-queue.ts';
import { IPV4_SYN, IPV4_SYN_ACK, withValidChecksums } from '../../../scripts/lib/fixtures.ts';
import { createDomain, identityHandler } from '../../../scripts/lib/identities.ts';
import { PolicyAuthorizer } from '../../../agent/src/handshake/authorizer.ts';
import type { KernelPath, PodPair, ServiceRoute } from '../../../agent/src/handshake/kernel-path.ts';
import { FAST_SYN_OPTION } from '../../../agent/src/kernel/layouts.ts';
import { compile } from '../../../scripts/lib/policy-dir.ts';

const SERVICE = [10, 96, 0, 10];
const POD = { a: [10, 215, 1, 1], b: [10, 215, 1, 2], c: [10, 215, 1, 3] } as const;
type PodName = keyof typeof POD;

function pod(name: PodName): VerifiedIdentity {
  const subject = `spiffe://pods.synpass/ns/shop/sa/${name}`;
  return { trustDomain: 'pods.synpass', subject, attributes: { 'synpass.subject': subject, 'k8s.label.app': name }, provenance: {}, agent: 'spiffe://pods.synpass/agent/node', expiresAt: Number.POSITIVE_INFINITY };
}

const byAddress = new Map((Object.keys(POD) as PodName[]).map((name) => [POD[name].join('.'), pod(name)]));
const pods: LocalPods = { identityOf: (address) => byAddress.get(address), isNodeAddress: () => false };

/** An IPv4 segment from `from`:`fromPort` to `to`:`toPort` with the fixture's flags and options. */
function segment(template: Uint8Array, from: readonly number[], fromPort: number, to: readonly number[], toPort: number, sequence: number, acknowledgment = 0): Uint8Array {
  const bytes = Uint8Array.from(template);
  const view = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  view.set(from, 12);
  view.set(to, 16);
  view.writeUInt16BE(fromPort, 20);
  view.writeUInt16BE(toPort, 22);
  view.writeUInt32BE(sequence, 24);
  view.writeUInt32BE(acknowledgment, 28);
  return withValidChecksums(bytes);
}

/** An IPv4 SYN with the kernel fast path's option appended to its options (no room is checked: the fixture's take 20 bytes). */
function withFastOption(syn: Uint8Array): Uint8Array {
  const { kind, length, exid } = FAST_SYN_OPTION;
  const out = new Uint8Array(syn.length + length);
  out.set(syn);
  out.set([kind, length, exid >> 8, exid & 0xff, 0, 0, 0, 7], syn.length);
  const view = Buffer.from(out.buffer);
  view.writeUInt16BE(out.length, 2);
  out[32] = ((syn.length - 20 + length) / 4) << 4;
  return withValidChecksums(out);
}

describe('pods through a DNAT on the node', () => {
  let queue: VirtualQueue;
  const events: { stage: string; reason: string; peer: string | undefined }[] = [];

  before(async () => {
    const domain = await createDomain('pods.synpass');
    // Pod B admits pod A only; every port is protected.
    const { handler } = await identityHandler(domain, 'node', {
      attributes: { 'host.name': 'node' },
      admission: { protectedPorts: 'all', allow: [{ subject: 'spiffe://pods.synpass/ns/shop/sa/a' }], allowWithoutIdentity: [] },
      localPods: pods,
    });
    queue = new VirtualQueue(handler, (event) => {
      events.push({ stage: event.stage, reason: event.reason, peer: event.peer?.subject });
    });
  });

  it('a pod\'s SYN to a service address, then the answer of the pod behind it: judged between the two pods at that SYN-ACK', () => {
    for (const [client, port, admitted] of [['a', 40001, true], ['c', 40002, false]] as const) {
      const isn = 0x1000 + port;
      // PREROUTING, from the client pod: the service address is no pod's, so no decision yet.
      // Tracked, so that the answer is queued.
      const syn = queue.deliver(segment(IPV4_SYN, POD[client], port, SERVICE, 80, isn), 'ingress');
      assert.deepEqual([syn.dropped, syn.tracked, syn.released], [false, true, false]);
      // The DNAT sent it to pod B:8080, whose SYN-ACK comes back through the node.
      const synAck = queue.deliver(segment(IPV4_SYN_ACK, POD.b, 8080, POD[client], port, 0x9000, isn + 1), 'ingress');
      assert.equal(synAck.dropped, !admitted, `pod ${client}`);
      assert.equal(synAck.released, admitted);
      // Refused, pod B's half-open connection is reset too, so that it stops retransmitting.
      assert.equal(synAck.resetServer, !admitted);
      assert.deepEqual(events.at(-1), { stage: 'syn-ack', reason: admitted ? 'ok-local' : 'not-allowed', peer: `spiffe://pods.synpass/ns/shop/sa/${client}` });
      if (!admitted) {
        // Pod B retransmits its SYN-ACK: refused again, never let by as from a server without agent.
        const again = queue.deliver(segment(IPV4_SYN_ACK, POD.b, 8080, POD[client], port, 0x9000, isn + 1), 'ingress');
        assert.deepEqual([again.dropped, again.resetServer, events.at(-1)?.reason], [true, true, 'not-allowed']);
      }
    }
  });

  it('the answer from anything else than a pod of this node (outside the target networks) is released, not judged', () => {
    const elsewhere = [192, 0, 2, 7];
    queue.deliver(segment(IPV4_SYN, POD.c, 40004, elsewhere, 443, 0x6000), 'ingress');
    const answer = queue.deliver(segment(IPV4_SYN_ACK, elsewhere, 443, POD.c, 40004, 0x9000, 0x6001), 'ingress');
    assert.deepEqual([answer.dropped, answer.released, events.at(-1)?.reason], [false, true, 'ok']);
  });

  it('a pod\'s answer that no filing names is judged between the two pods all the same, never released unjudged: the node\'s NAT sent it to another source port, or it acknowledges another ISN', () => {
    for (const [client, port, admitted] of [['a', 40005, true], ['c', 40003, false]] as const) {
      queue.deliver(segment(IPV4_SYN, POD[client], port, SERVICE, 80, 0x5000), 'ingress');
      // Two addresses in front of pod B's port, one source port: the NAT gave this connection another.
      const remapped = queue.deliver(segment(IPV4_SYN_ACK, POD.b, 8080, POD[client], 1522, 0x9000, 0x5001), 'ingress');
      const stray = queue.deliver(segment(IPV4_SYN_ACK, POD.b, 8080, POD[client], port, 0x9000, 0x5000 + 2), 'ingress');
      for (const answer of [remapped, stray]) {
        assert.deepEqual([answer.dropped, answer.released, answer.resetServer], [!admitted, admitted, !admitted], `pod ${client}`);
      }
      assert.deepEqual(events.at(-1), { stage: 'syn-ack', reason: admitted ? 'ok-local' : 'not-allowed', peer: `spiffe://pods.synpass/ns/shop/sa/${client}` });
    }
  });

  it('a pod\'s SYN queued again on its way out, after the DNAT chose a pod of this node: judged between the pods, no token goes into the pod', () => {
    for (const [client, port, admitted] of [['a', 40011, true], ['c', 40012, false]] as const) {
      const sent = segment(IPV4_SYN, POD[client], port, POD.b, 8080, 0x2000 + port);
      const out = queue.deliver(sent, 'egress');
      assert.equal(out.dropped, !admitted, `pod ${client}`);
      if (admitted) {
        assert.deepEqual(Buffer.from(out.bytes), Buffer.from(sent), 'the SYN leaves as it came, without a token');
        assert.equal(out.released, true);
      }
      assert.deepEqual([events.at(-1)?.stage, events.at(-1)?.reason], ['syn', admitted ? 'ok-local' : 'not-allowed']);
    }
  });

  it('a SYN from another host or from the node, queued again on its way into a pod (the pods a target network): it goes on as it came, no token, no new flow', () => {
    for (const [from, port] of [[[192, 0, 2, 7], 40021], [[10, 215, 0, 1], 40022]] as const) {
      const sent = segment(IPV4_SYN, from, port, POD.b, 8080, 0x3000 + port);
      const out = queue.deliver(sent, 'egress');
      assert.deepEqual([out.dropped, out.tracked, out.released], [false, false, false], `from ${from.join('.')}`);
      assert.deepEqual(Buffer.from(out.bytes), Buffer.from(sent), 'the SYN leaves as it came, without a token');
      assert.deepEqual([events.at(-1)?.stage, events.at(-1)?.reason, events.at(-1)?.peer], ['syn', 'ok', undefined]);
    }
  });

  it('another host\'s SYN the node routes on elsewhere (a service address whose backend is on another node) leaves as it came: no token, not the node\'s', () => {
    const sent = segment(IPV4_SYN, [192, 0, 2, 7], 40031, [198, 51, 100, 9], 9091, 0x4000);
    const out = queue.deliver(sent, 'egress');
    assert.deepEqual([out.dropped, out.tracked, out.released], [false, false, false]);
    assert.deepEqual(Buffer.from(out.bytes), Buffer.from(sent));
    // A pod's own SYN there speaks as the pod.
    const fromPod = queue.deliver(segment(IPV4_SYN, POD.a, 40032, [198, 51, 100, 9], 9091, 0x4100), 'egress');
    assert.equal(fromPod.dropped, false);
    assert.notDeepEqual(Buffer.from(fromPod.bytes), Buffer.from(segment(IPV4_SYN, POD.a, 40032, [198, 51, 100, 9], 9091, 0x4100)), 'pod A\'s token went in');
  });
});

describe('a peer without identity through a service address on the node', () => {
  it('a SYN the node lets by for the service address is followed, and judged for the pod behind it at its SYN-ACK; the node\'s own answer releases it', async () => {
    const domain = await createDomain('pods.synpass');
    const stranger = [192, 0, 2, 7];
    // Port 80 (the service address's) admits the stranger's network without identity; pod B's
    // 8080 admits no one without identity.
    const { handler } = await identityHandler(domain, 'node', {
      attributes: { 'host.name': 'node' },
      admission: { protectedPorts: 'all', allow: [], allowWithoutIdentity: [{ cidr: '192.0.2.0/24', ports: [80] }] },
      localPods: pods,
    });
    const events: { stage: string; reason: string; accepted: boolean }[] = [];
    const queue = new VirtualQueue(handler, (event) => events.push({ stage: event.stage, reason: event.reason, accepted: event.accepted }));
    const syn = queue.deliver(segment(IPV4_SYN, stranger, 40041, SERVICE, 80, 0x7000), 'ingress');
    assert.deepEqual([syn.dropped, syn.tracked, syn.released], [false, true, false], 'followed, not released');
    const synAck = queue.deliver(segment(IPV4_SYN_ACK, POD.b, 8080, stranger, 40041, 0x9000, 0x7001), 'ingress');
    assert.equal(synAck.dropped, true);
    assert.deepEqual(events.at(-1), { stage: 'syn-ack', reason: 'no-identity', accepted: false });
    // The node itself answers on another connection: released, nothing more to follow.
    queue.deliver(segment(IPV4_SYN, stranger, 40042, SERVICE, 80, 0x7100), 'ingress');
    const own = queue.deliver(segment(IPV4_SYN_ACK, SERVICE, 80, stranger, 40042, 0x9100, 0x7101), 'egress');
    assert.deepEqual([own.dropped, own.released, events.at(-1)?.reason], [false, true, 'peer-without-agent']);
  });
});

describe('a local pod to the node\'s own address', () => {
  const NODE = [10, 216, 1, 1];
  const nodePods: LocalPods = { identityOf: (address) => byAddress.get(address), isNodeAddress: (address) => address === NODE.join('.') };
  const kubelet = 'spiffe://pods.synpass/node/kubelet';

  /** The node's handler, its kubelet on port 10250, judging by the policy `yaml` (no admission list). */
  async function nodeUnderPolicy(yaml: string) {
    const domain = await createDomain('pods.synpass');
    const { handler } = await identityHandler(domain, 'node', {
      attributes: { 'host.name': 'node' },
      workloads: [{ name: 'kubelet', subject: kubelet, uids: [], cgroups: [], ports: [10250], attestors: [] }],
      admission: { protectedPorts: 'all', allow: [], allowWithoutIdentity: [] },
      localPods: nodePods,
    });
    handler.useAuthorizer(new PolicyAuthorizer(() => compile({ 'p.yaml': yaml })));
    return handler;
  }

  it('is judged as the pod for the node\'s workload at that port at its SYN, followed in case a node port sends it on, and judged between the two at the node\'s answer', async () => {
    const domain = await createDomain('pods.synpass');
    // Every local workload admits pod A only, the node's kubelet (port 10250) included.
    const { handler } = await identityHandler(domain, 'node', {
      attributes: { 'host.name': 'node' },
      workloads: [{ name: 'kubelet', subject: kubelet, uids: [], cgroups: [], ports: [10250], attestors: [] }],
      admission: { protectedPorts: 'all', allow: [{ subject: 'spiffe://pods.synpass/ns/shop/sa/a' }], allowWithoutIdentity: [] },
      localPods: nodePods,
    });
    const events: { stage: string; reason: string; peer: string | undefined; local: string | undefined }[] = [];
    const queue = new VirtualQueue(handler, (event) => events.push({ stage: event.stage, reason: event.reason, peer: event.peer?.subject, local: event.local?.['synpass.subject'] }));
    const syn = queue.deliver(segment(IPV4_SYN, POD.a, 40051, NODE, 10250, 0x8000), 'ingress');
    assert.deepEqual([syn.dropped, syn.tracked, syn.released], [false, true, false], 'followed, not released');
    assert.deepEqual(events.at(-1), { stage: 'syn', reason: 'ok-local', peer: 'spiffe://pods.synpass/ns/shop/sa/a', local: kubelet });
    const answer = queue.deliver(segment(IPV4_SYN_ACK, NODE, 10250, POD.a, 40051, 0x9200, 0x8001), 'egress');
    assert.deepEqual([answer.dropped, answer.released], [false, true]);
    assert.deepEqual(events.at(-1), { stage: 'syn-ack', reason: 'ok-local', peer: 'spiffe://pods.synpass/ns/shop/sa/a', local: kubelet });
    assert.deepEqual(Buffer.from(answer.bytes), Buffer.from(segment(IPV4_SYN_ACK, NODE, 10250, POD.a, 40051, 0x9200, 0x8001)), 'no token goes into the pod');
    // Pod C is not admitted: cloaked at its SYN.
    const refused = queue.deliver(segment(IPV4_SYN, POD.c, 40052, NODE, 10250, 0x8100), 'ingress');
    assert.equal(refused.dropped, true);
    assert.deepEqual(events.at(-1), { stage: 'syn', reason: 'not-allowed', peer: 'spiffe://pods.synpass/ns/shop/sa/c', local: kubelet });
    // A node port: the DNAT sends pod A's SYN on to pod B, whose answer is judged between the pods.
    queue.deliver(segment(IPV4_SYN, POD.a, 40053, NODE, 30080, 0x8200), 'ingress');
    const fromPod = queue.deliver(segment(IPV4_SYN_ACK, POD.b, 8080, POD.a, 40053, 0x9300, 0x8201), 'ingress');
    assert.deepEqual([fromPod.dropped, fromPod.released], [false, true]);
    assert.deepEqual(events.at(-1), { stage: 'syn-ack', reason: 'ok-local', peer: 'spiffe://pods.synpass/ns/shop/sa/a', local: 'spiffe://pods.synpass/ns/shop/sa/b' });
  });

  it('a pod\'s egress policy is judged once the answering end is known: refused at the node\'s answer, the retransmit too; a node port to a pod it may reach still works', async () => {
    // The kubelet admits pod A; pod B admits pod A; pod A may reach pod B only.
    const handler = await nodeUnderPolicy(
      [
        'policies:',
        `  - { name: kubelet, selector: { synpass.subject: "${kubelet}" }, ingress: [{ name: from-a, action: allow, ports: [10250], from: { k8s.label.app: a } }] }`,
        '  - { name: b, selector: { k8s.label.app: b }, ingress: [{ name: from-a, action: allow, ports: [8080], from: { k8s.label.app: a } }] }',
        '  - { name: a, selector: { k8s.label.app: a }, egress: [{ name: to-b, action: allow, ports: [8080], to: { k8s.label.app: b } }] }',
        '',
      ].join('\n'),
    );
    const events: { stage: string; reason: string; rule: string | null; local: string | undefined; peer: string | undefined }[] = [];
    const queue = new VirtualQueue(handler, (event) => events.push({ stage: event.stage, reason: event.reason, rule: event.rule, local: event.local?.['synpass.subject'], peer: event.peer?.subject }));
    const syn = queue.deliver(segment(IPV4_SYN, POD.a, 40061, NODE, 10250, 0xa000), 'ingress');
    assert.deepEqual([syn.dropped, syn.tracked, events.at(-1)?.reason, events.at(-1)?.rule], [false, true, 'ok-local', 'kubelet/from-a'], 'the kubelet admits pod A');
    for (const attempt of ['answer', 'retransmit']) {
      const answer = queue.deliver(segment(IPV4_SYN_ACK, NODE, 10250, POD.a, 40061, 0xb000, 0xa001), 'egress');
      // The kubelet's half-open connection is reset along with the refused answer.
      assert.deepEqual([answer.dropped, answer.resetServer, events.at(-1)?.reason, events.at(-1)?.rule], [true, true, 'not-allowed', 'default-deny'], attempt);
      // Pod A's egress refused it: logged from pod A's side, the kubelet its peer.
      assert.deepEqual([events.at(-1)?.local, events.at(-1)?.peer], ['spiffe://pods.synpass/ns/shop/sa/a', kubelet], attempt);
    }
    // Through a node port to pod B, which pod A may reach.
    queue.deliver(segment(IPV4_SYN, POD.a, 40062, NODE, 30080, 0xa100), 'ingress');
    const fromPod = queue.deliver(segment(IPV4_SYN_ACK, POD.b, 8080, POD.a, 40062, 0xb100, 0xa101), 'ingress');
    assert.deepEqual([fromPod.dropped, fromPod.released, fromPod.resetServer, events.at(-1)?.reason, events.at(-1)?.rule], [false, true, false, 'ok-local', 'b/from-a']);
  });

  it('the node\'s answer through a service address in front of its own port, or to another source port the node\'s NAT chose, is judged for the workload at the port it answers from', async () => {
    // The kubelet admits pod A; nothing else on the node is open.
    const handler = await nodeUnderPolicy(`policies:\n  - { name: kubelet, selector: { synpass.subject: "${kubelet}" }, ingress: [{ name: from-a, action: allow, ports: [10250], from: { k8s.label.app: a } }] }\n`);
    const events: { reason: string; rule: string | null; local: string | undefined }[] = [];
    const queue = new VirtualQueue(handler, (event) => events.push({ reason: event.reason, rule: event.rule, local: event.local?.['synpass.subject'] }));
    for (const [client, port, admitted] of [['a', 40071, true], ['c', 40072, false]] as const) {
      const isn = 0xc000 + port;
      // Sent to a service address's port 443, which the DNAT makes the kubelet's 10250.
      const syn = queue.deliver(segment(IPV4_SYN, POD[client], port, SERVICE, 443, isn), 'ingress');
      assert.deepEqual([syn.dropped, syn.tracked], [false, true]);
      const expected = admitted ? [false, true, 'ok-local', 'kubelet/from-a', kubelet] : [true, false, 'not-allowed', 'default-deny', kubelet];
      const answer = queue.deliver(segment(IPV4_SYN_ACK, NODE, 10250, POD[client], port, 0xd000, isn + 1), 'egress');
      assert.deepEqual([answer.dropped, answer.released, events.at(-1)?.reason, events.at(-1)?.rule, events.at(-1)?.local], expected, `pod ${client}`);
      // Another connection of the pod, answered at a source port the NAT chose: no filing names it.
      queue.deliver(segment(IPV4_SYN, POD[client], port + 100, SERVICE, 443, isn + 7), 'ingress');
      const remapped = queue.deliver(segment(IPV4_SYN_ACK, NODE, 10250, POD[client], 1522, 0xd100, isn + 8), 'egress');
      assert.deepEqual([remapped.dropped, remapped.released, events.at(-1)?.reason, events.at(-1)?.rule, events.at(-1)?.local], expected, `pod ${client}, another source port`);
    }
  });
});

describe('a local pod\'s fast SYN on the queue', () => {
  it('reaches the agent only when the node\'s kernel did not vouch for it where it entered: dropped as bad-proof, and the pod gets no kernel entries for a while; a plain SYN of the pod goes on', async () => {
    const domain = await createDomain('pods.synpass');
    const { handler } = await identityHandler(domain, 'node', {
      attributes: { 'host.name': 'node' },
      admission: { protectedPorts: 'all', allow: [], allowWithoutIdentity: [] },
      localPods: pods,
    });
    const unvouched: string[] = [];
    handler.useKernelPath({ cloak: () => undefined, podUnvouched: (address: string) => unvouched.push(address) } as unknown as KernelPath);
    const events: { stage: string; reason: string }[] = [];
    const queue = new VirtualQueue(handler, (event) => events.push({ stage: event.stage, reason: event.reason }));
    const remote = [198, 51, 100, 9];
    const fast = queue.deliver(withFastOption(segment(IPV4_SYN, POD.a, 40061, remote, 9090, 0x6100)), 'ingress');
    assert.equal(fast.dropped, true);
    assert.deepEqual(events.at(-1), { stage: 'syn', reason: 'bad-proof' });
    assert.deepEqual(unvouched, ['10.215.1.1']);
    const plain = queue.deliver(segment(IPV4_SYN, POD.a, 40062, remote, 9090, 0x6200), 'ingress');
    assert.deepEqual([plain.dropped, plain.tracked, events.at(-1)?.reason], [false, true, 'ok']);
  });
});

describe('a local pod to another, with the kernel fast path', () => {
  it('a SYN addressed to the server pod and admitted between the two is handed to the node\'s kernel as a pair for that port, under both pods\' tokens; a refused one, or one to a service address, is not', async () => {
    const domain = await createDomain('pods.synpass');
    const { handler, local } = await identityHandler(domain, 'node', {
      attributes: { 'host.name': 'node' },
      admission: { protectedPorts: 'all', allow: [{ subject: 'spiffe://pods.synpass/ns/shop/sa/a' }], allowWithoutIdentity: [] },
      localPods: pods,
    });
    await local.setAddressSource(() =>
      (Object.keys(POD) as PodName[]).map((name) => ({ address: POD[name].join('.'), name: `shop/${name}-1`, subject: pod(name).subject, attributes: new Map([['k8s.label.app', { value: name, attestor: 'k8s' }]]) })),
    );
    const pairs: PodPair[] = [];
    const admitPodPair = (pair: PodPair): boolean => {
      pairs.push(pair);
      return true;
    };
    handler.useKernelPath({ cloak: () => undefined, admitPodPair } as unknown as KernelPath);
    const queue = new VirtualQueue(handler);
    const admitted = queue.deliver(segment(IPV4_SYN, POD.a, 40071, POD.b, 8080, 0xc000), 'ingress');
    assert.deepEqual([admitted.dropped, admitted.released], [false, true]);
    assert.equal(pairs.length, 1);
    const [pair] = pairs;
    assert.deepEqual([pair!.clientAddress, pair!.serverAddress, pair!.port, pair!.client.subject, pair!.server.subject], ['10.215.1.1', '10.215.1.2', 8080, pod('a').subject, pod('b').subject]);
    assert.deepEqual([pair!.clientTokenSignature, pair!.serverTokenSignature], [local.tokenForAddress('10.215.1.1')!.packed.signature, local.tokenForAddress('10.215.1.2')!.packed.signature]);
    assert.equal(queue.deliver(segment(IPV4_SYN, POD.c, 40072, POD.b, 8080, 0xc100), 'ingress').dropped, true);
    queue.deliver(segment(IPV4_SYN, POD.a, 40073, SERVICE, 80, 0xc200), 'ingress');
    assert.equal(pairs.length, 1, 'pod C is refused, and a service address names no pod at the SYN');
  });
});

describe('a local pod to another through a service address, with the kernel fast path', () => {
  it('judged between the two pods, at the server pod\'s answer or after the DNAT, hands the kernel the pair and the client pod\'s route to the service address; a SYN the kernel deferred, the pair alone; a deferred SYN sent outside the targets leaves untouched; one sent to another host gets the pod\'s token, and a route', async () => {
    const domain = await createDomain('pods.synpass');
    const remote = [198, 51, 100, 9];
    const { handler, local } = await identityHandler(domain, 'node', {
      attributes: { 'host.name': 'node' },
      admission: { protectedPorts: 'all', allow: [{ subject: 'spiffe://pods.synpass/ns/shop/sa/a' }], allowWithoutIdentity: [] },
      localPods: pods,
      isTarget: (address) => address !== remote.join('.'),
    });
    await local.setAddressSource(() =>
      (Object.keys(POD) as PodName[]).map((name) => ({ address: POD[name].join('.'), name: `shop/${name}-1`, subject: pod(name).subject, attributes: new Map([['k8s.label.app', { value: name, attestor: 'k8s' }]]) })),
    );
    const pairs: PodPair[] = [];
    const routes: ServiceRoute[] = [];
    const kernelPath = {
      cloak: () => undefined,
      admitPodPair: (pair: PodPair) => pairs.push(pair) > 0,
      deferServiceRoute: (route: ServiceRoute) => routes.push(route) > 0,
    };
    handler.useKernelPath(kernelPath as unknown as KernelPath);
    const queue = new VirtualQueue(handler);
    const named = () => [pairs.map((p) => `${p.clientAddress}>${p.serverAddress}:${p.port}`), routes.map((r) => `${r.clientAddress}>${r.serviceAddress}:${r.port}`)];
    // Judged at pod B's answer: the SYN was filed before the DNAT, under the service address.
    queue.deliver(segment(IPV4_SYN, POD.a, 40081, SERVICE, 80, 0xd000), 'ingress');
    const answer = queue.deliver(segment(IPV4_SYN_ACK, POD.b, 8080, POD.a, 40081, 0xe000, 0xd001), 'ingress');
    assert.deepEqual([answer.dropped, answer.released], [false, true]);
    assert.deepEqual(named(), [['10.215.1.1>10.215.1.2:8080'], ['10.215.1.1>10.96.0.10:80']]);
    assert.deepEqual([routes[0]!.clientTokenSignature, routes[0]!.expiresAt], [local.tokenForAddress('10.215.1.1')!.packed.signature, pod('a').expiresAt]);
    // Queued again after the DNAT, toward a target network: judged at the SYN, the same two.
    queue.deliver(segment(IPV4_SYN, POD.a, 40082, SERVICE, 80, 0xd100), 'ingress');
    const after = queue.deliver(segment(IPV4_SYN, POD.a, 40082, POD.b, 8080, 0xd100), 'egress');
    assert.deepEqual([after.dropped, after.released], [false, true]);
    assert.equal(routes.length, 2);
    // Deferred by the kernel (no filing before the DNAT), and no pair in the kernel: the pair alone.
    const deferred = queue.deliver(segment(IPV4_SYN, POD.a, 40083, POD.b, 8080, 0xd200), 'egress');
    assert.deepEqual([deferred.dropped, deferred.released, pairs.length, routes.length], [false, true, 3, 2]);
    // Pod C is refused after the DNAT too, and the kernel gets nothing.
    assert.equal(queue.deliver(segment(IPV4_SYN, POD.c, 40084, POD.b, 8080, 0xd300), 'egress').dropped, true);
    assert.deepEqual([pairs.length, routes.length], [3, 2]);
    // A deferred SYN the DNAT sent outside the target networks: no token, as without the deferral.
    const syn = segment(IPV4_SYN, POD.a, 40085, remote, 9090, 0xd400);
    const outside = queue.deliver(syn, 'egress');
    assert.deepEqual([outside.dropped, outside.tracked, outside.bytes.length], [false, false, syn.length]);
    // Through the service address to another host in the target networks: the pod's token, and
    // its route, so that its next SYNs there are queued once, after the DNAT; deferred, no new route.
    const elsewhere = [203, 0, 113, 7];
    queue.deliver(segment(IPV4_SYN, POD.a, 40086, SERVICE, 80, 0xd500), 'ingress');
    const toHost = segment(IPV4_SYN, POD.a, 40086, elsewhere, 9090, 0xd500);
    const tokened = queue.deliver(toHost, 'egress');
    assert.deepEqual([tokened.dropped, tokened.tracked, tokened.bytes.length > toHost.length], [false, true, true]);
    assert.deepEqual(named()[1]!.at(-1), '10.215.1.1>10.96.0.10:80');
    assert.equal(routes.length, 3);
    queue.deliver(segment(IPV4_SYN, POD.a, 40087, elsewhere, 9090, 0xd600), 'egress');
    assert.equal(routes.length, 3);
  });
});
