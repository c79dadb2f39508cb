// The kernel fast path's pure parts: fast keys, map layouts (as native/bpf/fast_path.h lays them
// out), kernel counters as verdicts, and the choice of whether the fast path runs.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { endianness } from 'node:os';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { kernelFlowRecord } from '../../../agent/src/telemetry/flow-log.ts';
import { addressKey, cgroupKey, excludedKey, clientKey, clientValue, configValue, decodeEvents, EVENT_BYTES, FAST_COUNTERS, FLOW_VALUE_BYTES, flowKey, flowValue, KEY_SIZE, kernelVerdicts, MAP_CAPACITY, OWNER_POD, OWNER_UID, OWNER_WORKLOAD, ownerKey, podPairKey, podPairValue, provenPeerFastId, serverKey, serverValue } from '../../../agent/src/kernel/layouts.ts';
import { deriveFastKey, FAST_KEY_BYTES } from '../../../agent/src/protocol/fast-keys.ts';
import { cgroup2Mount, chooseKernelFastPath, FastPathUnavailableError, procNetDevInterfaces, workloadCgroups } from '../../../agent/src/runtime/kernel-fast-path.ts';
import { DEFAULTS } from '../../../agent/src/runtime/config.ts';
import { connectionMarks } from '../../../agent/src/datapath/marks.ts';
import { ROOT } from '../../../scripts/lib/lab.ts';

const HEADER = readFileSync(join(ROOT, 'native/bpf/fast_path.h'), 'utf8');
const PROGRAM = readFileSync(join(ROOT, 'native/bpf/fast_path.bpf.c'), 'utf8');
const LITTLE = endianness() === 'LE';

describe('fast keys', () => {
  it('both ends derive one key and id per pair and client token; another token or pair gives others', () => {
    const pair = randomBytes(32);
    const signature = randomBytes(64);
    const a = deriveFastKey(pair, signature);
    assert.deepEqual(deriveFastKey(Buffer.from(pair), Buffer.from(signature)), a);
    assert.equal(a.key.length, FAST_KEY_BYTES);
    assert.ok(Number.isInteger(a.fastId) && a.fastId >= 0 && a.fastId < 2 ** 32);
    assert.notDeepEqual(deriveFastKey(pair, randomBytes(64)).key, a.key);
    assert.notDeepEqual(deriveFastKey(randomBytes(32), signature).key, a.key);
    // The kernel never holds the pair key, nor a prefix of it.
    assert.notDeepEqual(a.key, pair.subarray(0, FAST_KEY_BYTES));
  });
});

describe('map layouts', () => {
  it('addresses: IPv4 as ::ffff:a.b.c.d, IPv6 whole', () => {
    assert.equal(addressKey('10.213.5.1').toString('hex'), '00000000000000000000ffff0ad50501');
    assert.equal(addressKey('fd53:5350:0:19::2').toString('hex'), 'fd535350000000190000000000000002');
    assert.deepEqual(addressKey('fd53:5350:0:19:0:0:0:2'), addressKey('fd53:5350:0:19::2'));
  });

  it('keys and values have the sizes and field offsets of fast_path.h, numbers in host order', () => {
    const read16 = (b: Buffer, o: number) => (LITTLE ? b.readUInt16LE(o) : b.readUInt16BE(o));
    const read32 = (b: Buffer, o: number) => (LITTLE ? b.readUInt32LE(o) : b.readUInt32BE(o));
    const client = clientKey('10.1.2.3', 8080, { kind: OWNER_UID, id: 1000 });
    assert.equal(client.length, KEY_SIZE.fast_clients);
    assert.deepEqual([read16(client, 16), read16(client, 18), read32(client, 20)], [8080, 0, 1000]);
    // A cgroup workload is named by its number (owner_kind 1), a pod by its number in fast_pods (owner_kind 2).
    const byWorkload = clientKey('10.1.2.3', 8080, { kind: OWNER_WORKLOAD, id: 3 });
    assert.deepEqual([read16(byWorkload, 18), read32(byWorkload, 20)], [1, 3]);
    const byPod = clientKey('10.1.2.3', 8080, { kind: OWNER_POD, id: 7 });
    assert.deepEqual([read16(byPod, 18), read32(byPod, 20)], [2, 7]);
    for (const [name, kind] of Object.entries({ OWNER_UID, OWNER_WORKLOAD, OWNER_POD })) assert.match(HEADER, new RegExp(`#define ${name} ${kind}\\n`), name);
    // A queued SYN's owner: local address, ISN, local port (struct owner_key).
    const owner = ownerKey('10.1.2.3', 41000, 0xfedcba98);
    assert.equal(owner.length, KEY_SIZE.fast_owners);
    assert.deepEqual([owner.subarray(0, 16).toString('hex'), read32(owner, 16), read16(owner, 20), read16(owner, 22)], ['00000000000000000000ffff0a010203', 0xfedcba98, 41000, 0]);
    // A node's pair of pods: client address, server address, the server's port (struct pod_pair_key).
    const pair = podPairKey('10.215.1.1', 'fd15::2', 8080);
    assert.equal(pair.length, KEY_SIZE.fast_pod_pairs);
    assert.deepEqual([pair.subarray(0, 16).toString('hex'), pair.subarray(16, 32).toString('hex'), read16(pair, 32), read16(pair, 34)], ['00000000000000000000ffff0ad70101', 'fd150000000000000000000000000002', 8080, 0]);
    assert.deepEqual([podPairValue(1_800_000_000.7).length, read32(podPairValue(1_800_000_000.7), 0), read32(podPairValue(1_800_000_000.7), 4)], [8, 1_800_000_000, 0]);
    // A service route (struct pod_pair_value, deferred): judged after the DNAT, admitting nothing itself.
    assert.deepEqual([read32(podPairValue(1_800_000_000, true), 0), read32(podPairValue(1_800_000_000, true), 4)], [1_800_000_000, 1]);
    // One end's view of a connection (struct flow_key), and what the kernel knows of it (struct flow_value).
    const flow = flowKey('10.1.2.3', 443, 'fd00::7', 41000);
    assert.equal(flow.length, KEY_SIZE.fast_flows);
    assert.deepEqual([flow.subarray(0, 16).toString('hex'), flow.subarray(16, 32).toString('hex'), read16(flow, 32), read16(flow, 34)], ['00000000000000000000ffff0a010203', 'fd000000000000000000000000000007', 443, 41000]);
    const proven = flowValue(0xdeadbeef, false);
    assert.deepEqual([proven.length, read32(proven, 0), proven[4], proven[5]], [FLOW_VALUE_BYTES, 0xdeadbeef, 1, 0]);
    assert.deepEqual([provenPeerFastId(proven), provenPeerFastId(flowValue(null, true)), flowValue(null, true)[5]], [0xdeadbeef, null, 1]);
    assert.match(HEADER, /struct flow_value \{\s*__u32 fast_id;[^}]*\n\s*__u8 proven_peer;[^}]*\n\s*__u8 untracked;[^}]*\n\s*__u16 pad;\s*\};/);
    const cgroup = cgroupKey(0x1_0000_0002n);
    assert.equal(LITTLE ? cgroup.readBigUInt64LE() : cgroup.readBigUInt64BE(), 0x1_0000_0002n);
    const key = randomBytes(16);
    const value = clientValue(0xdeadbeef, key, 1_800_000_000);
    assert.deepEqual([value.length, read32(value, 0), read32(value, 4), value.subarray(8).toString('hex')], [24, 0xdeadbeef, 1_800_000_000, key.toString('hex')]);
    const server = serverKey('10.1.2.3', 'fd00::7', 0x01020304, 443);
    assert.equal(server.length, KEY_SIZE.fast_servers);
    assert.deepEqual([server.subarray(0, 16).toString('hex'), server.subarray(16, 32).toString('hex')], ['00000000000000000000ffff0a010203', 'fd000000000000000000000000000007']);
    assert.deepEqual([read32(server, 32), read16(server, 36)], [0x01020304, 443]);
    assert.deepEqual([read32(serverValue(key, true, false, 0), 16), read32(serverValue(key, false, false, 0), 16)], [1, 0]);
    assert.deepEqual([read32(serverValue(key, true, true, 0), 20), read32(serverValue(key, true, false, 0), 20)], [1, 0]);
    // The expiry second as the kernel compares it: whole seconds, within 32 unsigned bits.
    const expiring = serverValue(key, true, false, 1_800_000_000.7);
    assert.deepEqual([expiring.length, expiring.subarray(0, 16).toString('hex'), read32(expiring, 24)], [32, key.toString('hex'), 1_800_000_000]);
    assert.deepEqual([read32(serverValue(key, true, false, 2 ** 40), 24), read32(clientValue(1, key, -5), 4)], [0xffffffff, 0]);
    const config = configValue({ realtimeOffsetNs: 5n, windowSeconds: 30, acceptMark: 0x500000, clientMark: 0x100000, acceptSample: 0.5, sourceRate: 10_000, sourceBurst: 1024, budgetMark: 0x1000000, untrackedMark: 0x2000000, workloadCgroups: 2, vouchedUntil: 1_800_000_030.5, agentAway: true, netnsCookie: 0x1_0000_0007n, routedWorkloads: true, podMark: 0x900000, judgedMark: 0x800000, deferMark: 0x1100000, nameUidOwners: true, trackNew: true });
    assert.deepEqual(
      [config.length, read32(config, 8), read32(config, 12), read32(config, 16), read32(config, 20), read32(config, 24), read32(config, 28), read32(config, 32), read32(config, 36), read32(config, 40), read32(config, 44), read32(config, 48), read32(config, 52)],
      [88, 30, 0x500000, 0x100000, 1, 2 ** 31, 10_000, 0x1000000, 0x2000000, 2, 1024, 1_800_000_030, 1],
    );
    assert.equal(LITTLE ? config.readBigUInt64LE(56) : config.readBigUInt64BE(56), 0x1_0000_0007n);
    assert.deepEqual([read32(config, 64), read32(config, 68), read32(config, 72), read32(config, 76), read32(config, 80), read32(config, 84)], [1, 0x900000, 0x800000, 0x1100000, 1, 1]);
    const running = configValue({ realtimeOffsetNs: 0n, windowSeconds: 1, acceptMark: 0, clientMark: 0, acceptSample: 1, sourceRate: 0, sourceBurst: 0, budgetMark: 0, untrackedMark: 0, workloadCgroups: 0, vouchedUntil: 0, agentAway: false, netnsCookie: 0n, routedWorkloads: false, podMark: 0, judgedMark: 0, deferMark: 0, nameUidOwners: false, trackNew: false });
    assert.deepEqual([read32(running, 24), read32(running, 52), read32(running, 64), read32(running, 80), read32(running, 84)], [0xffffffff, 0, 0, 0, 0]);
  });

  it('excluded networks as LPM prefixes over the 16-byte address', () => {
    const read32 = (b: Buffer, o: number) => (LITTLE ? b.readUInt32LE(o) : b.readUInt32BE(o));
    const v4 = excludedKey('10.9.0.0/16');
    assert.deepEqual([v4.length, read32(v4, 0), v4.subarray(4).toString('hex')], [20, 112, '00000000000000000000ffff0a090000']);
    assert.equal(read32(excludedKey('fd00::/8'), 0), 8);
  });

  it('capacities and counters are those of the kernel program', () => {
    for (const [name, capacity] of Object.entries(MAP_CAPACITY)) {
      const declared = new RegExp(`__uint\\(max_entries, (\\d+)\\);[^}]*\\} ${name} SEC`).exec(PROGRAM);
      assert.equal(Number(declared?.[1]), capacity, name);
    }
    const counters = /enum fast_counter \{([\s\S]*?)\};/.exec(HEADER)![1]!.match(/FAST_[A-Z_]+(?=,)/g)!.filter((name) => name !== 'FAST_COUNTER_COUNT');
    assert.equal(counters.length, FAST_COUNTERS.length);
  });
});

describe('kernel events', () => {
  it('decode from ring-buffer records and become flow records of the kernel path', () => {
    const records = Buffer.alloc(3 * EVENT_BYTES);
    const write32 = (value: number, offset: number) => (LITTLE ? records.writeUInt32LE(value, offset) : records.writeUInt32BE(value, offset));
    const write16 = (value: number, offset: number) => (LITTLE ? records.writeUInt16LE(value, offset) : records.writeUInt16BE(value, offset));
    write32(FAST_COUNTERS.indexOf('synNoIdentity'), 0);
    addressKey('10.213.5.3').copy(records, 8);
    addressKey('10.213.5.2').copy(records, 24);
    write16(40000, 40);
    write16(8080, 42);
    write32(17, 44);
    write32(FAST_COUNTERS.indexOf('synAccepted'), EVENT_BYTES);
    write32(0xabcdef, EVENT_BYTES + 4);
    addressKey('fd53:5350:0:19::1').copy(records, EVENT_BYTES + 8);
    write32(1, EVENT_BYTES + 52);
    // A client entry the kernel retired names its owner: owner_kind 1, workload 3.
    write32(FAST_COUNTERS.indexOf('clientRetired'), 2 * EVENT_BYTES);
    write32(1, 2 * EVENT_BYTES + 48);
    write32(3, 2 * EVENT_BYTES + 52);
    const [drop, accept, retired] = decodeEvents(records);
    assert.deepEqual(drop, { counter: 'synNoIdentity', fastId: 0, source: '10.213.5.3', destination: '10.213.5.2', sourcePort: 40000, destinationPort: 8080, folded: 17, owner: null });
    assert.equal(accept?.source, 'fd53:5350:0:19:0:0:0:1');
    assert.equal(accept?.owner, null, 'only a retired entry has an owner');
    assert.deepEqual(retired?.owner, { kind: OWNER_WORKLOAD, id: 3 });
    assert.equal(kernelFlowRecord(retired, null), null, 'a retired entry is no verdict');
    const record = kernelFlowRecord(drop, null)!;
    assert.deepEqual([record.verdict, record.reason, record.stage, record.source, record.path], ['drop', 'no-identity', 'syn', '10.213.5.3:40000', 'kernel']);
    assert.equal(kernelFlowRecord({ ...drop, counter: 'synFallback' }, null), null, 'a fallback is no verdict');
  });
});

describe('kernel counters as verdicts', () => {
  it('fold into the closed reasons; events that are not verdicts stay out', () => {
    const counters = Object.fromEntries(FAST_COUNTERS.map((name) => [name, 0])) as Record<(typeof FAST_COUNTERS)[number], number>;
    Object.assign(counters, { synAccepted: 5, synAckVerified: 2, synBadProof: 1, synAckBadProof: 3, synFallback: 9, synAckSigned: 5 });
    assert.deepEqual(kernelVerdicts(counters), [
      { direction: 'ingress', action: 'accept', reason: 'ok-kernel', count: 7 },
      { direction: 'ingress', action: 'drop', reason: 'bad-proof', count: 4 },
    ]);
  });
});

describe('whether the fast path runs', () => {
  const marks = connectionMarks();
  const config = (kernelFastPath: 'auto' | 'on' | 'off') => ({
    mode: 'identity' as const,
    replayWindowSeconds: 30,
    excluded: [],
    workloads: [],
    kubernetes: null,
    datapath: { ...DEFAULTS.datapath, kernelFastPath, fastPathPinDir: '/tmp/not-bpffs/synpass', fastPathCgroup: '/sys/fs/cgroup' },
  });

  it('off: never, and says so', () => {
    assert.deepEqual(chooseKernelFastPath(config('off'), marks), { path: null, reason: 'off (datapath.kernelFastPath)', cgroup: null });
  });

  it('auto: falls back to the queue and names what is missing; on: refuses to start', () => {
    const choice = chooseKernelFastPath(config('auto'), marks);
    assert.equal(choice.path, null);
    assert.match(choice.reason, /no bpffs at \/tmp\/not-bpffs|not built/);
    assert.throws(() => chooseKernelFastPath(config('on'), marks), FastPathUnavailableError);
  });

  it('finds the cgroup v2 mount in mountinfo', () => {
    const mountinfo = [
      '25 30 0:23 / /sys rw,nosuid shared:7 - sysfs sysfs rw',
      '35 25 0:30 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate',
    ].join('\n');
    assert.equal(cgroup2Mount(mountinfo), '/sys/fs/cgroup/unified');
    assert.equal(cgroup2Mount('25 30 0:23 / /sys rw - sysfs sysfs rw'), null);
  });

  it('lists every interface of /proc/net/dev but loopback, a pod\'s link without an address too', () => {
    const text = [
      'Inter-|   Receive                                                |  Transmit',
      ' face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed',
      '    lo: 2712452    7884    0    0    0     0          0         0  2712452    7884    0    0    0     0       0          0',
      '  eth0:   10 1 0 0 0 0 0 0 10 1 0 0 0 0 0 0',
      'cali1a2b3c4d5e6:   0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0',
      '',
    ].join('\n');
    assert.deepEqual(procNetDevInterfaces(text), ['eth0', 'cali1a2b3c4d5e6']);
  });

  it('names workload cgroups under the cgroup the programs attach to, by their position in workloads (from 1)', () => {
    const workload = (name: string, cgroups: string[]) => ({ name, subject: `spiffe://d/${name}`, uids: [], cgroups, ports: [], attributes: {} });
    const workloads = [workload('batch', []), workload('reports', ['/system.slice/reports.service', '/system.slice/reports-cron.service'])];
    assert.deepEqual(workloadCgroups(workloads, '/sys/fs/cgroup/unified'), [
      { workload: 2, directory: '/sys/fs/cgroup/unified/system.slice/reports.service' },
      { workload: 2, directory: '/sys/fs/cgroup/unified/system.slice/reports-cron.service' },
    ]);
    assert.deepEqual(workloadCgroups(workloads, '/host/cgroup/')[0], { workload: 2, directory: '/host/cgroup/system.slice/reports.service' });
    assert.deepEqual(workloadCgroups(workloads, '/')[0], { workload: 2, directory: '/system.slice/reports.service' });
  });
});
