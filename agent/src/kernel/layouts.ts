// The byte layouts of the fast path's map keys and values, as native/bpf/fast_path.h defines
// them: addresses in 16 bytes (IPv4 as ::ffff:a.b.c.d), ports, ids and marks in the host's byte
// order, keys as they are. Pure: encoding only.
import { endianness } from 'node:os';
import { canonicalAddress, formatAddress } from '../datapath/addresses.ts';
import { sumVerdicts, type VerdictCount } from '../datapath/engine.ts';
import { FAST_SYN_EXID, FAST_SYN_LENGTH } from '../datapath/packet.ts';
import { FAST_KEY_BYTES } from '../protocol/fast-keys.ts';

const LITTLE = endianness() === 'LE';

/** struct client_key's owner_kind (fast_path.h). */
export const OWNER_UID = 0;
export const OWNER_WORKLOAD = 1;
export const OWNER_POD = 2;

/** A local connection's workload as the kernel names it (struct client_key): kind and number. */
export interface KernelOwner {
  kind: typeof OWNER_UID | typeof OWNER_WORKLOAD | typeof OWNER_POD;
  /** The uid, the workload number or the pod number. */
  id: number;
}

/** The maps and how many entries each holds (fast_path.bpf.c). */
export const MAP_CAPACITY = {
  fast_clients: 65_536,
  fast_conns: 16_384,
  fast_servers: 65_536,
  fast_replay: 131_072,
  fast_sources: 65_536,
  fast_flows: 65_536,
  fast_workloads: 1024,
  fast_owners: 16_384,
  fast_pods: 2048,
  fast_pod_pairs: 8192,
} as const;

export const KEY_SIZE = { fast_clients: 24, fast_conns: 24, fast_servers: 40, fast_replay: 32, fast_flows: 36, fast_owners: 24, fast_pod_pairs: 36 } as const;

/** The fast SYN's TCP option (fast_path.h): kind, length, ExID, fast id (4), time (4), MAC (8). */
export const FAST_SYN_OPTION = { kind: 254, exid: FAST_SYN_EXID, length: FAST_SYN_LENGTH } as const;

/** Ports, the size of the cloak table (one byte each: 1 = closed to peers without identity). */
export const PORT_COUNT = 65_536;
/** Source networks excluded from synpass that the kernel's cloak leaves alone. */
export const MAX_EXCLUDED_NETWORKS = 1024;

/** enum fast_counter, in order. */
export const FAST_COUNTERS = [
  'synAccepted',
  'synUnknownPeer',
  'synNotAllowed',
  'synStale',
  'synBadProof',
  'synReplayed',
  'synAckVerified',
  'synAckBadProof',
  'synSent',
  'synFallback',
  'synAckSigned',
  'synNoIdentity',
  'eventsLost',
  'synSourceLimited',
  'clientRetired',
  'podSynAccepted',
  'serviceSynDeferred',
] as const;
export type FastCounter = (typeof FAST_COUNTERS)[number];

/** How kernel counters read as verdicts (synpass_verdicts_total); the others are not verdicts. */
const VERDICT_OF: Partial<Record<FastCounter, Omit<VerdictCount, 'count'>>> = {
  synAccepted: { direction: 'ingress', action: 'accept', reason: 'ok-kernel' },
  synUnknownPeer: { direction: 'ingress', action: 'drop', reason: 'unknown-fast-peer' },
  synNotAllowed: { direction: 'ingress', action: 'drop', reason: 'not-allowed' },
  synStale: { direction: 'ingress', action: 'drop', reason: 'stale-timestamp' },
  synBadProof: { direction: 'ingress', action: 'drop', reason: 'bad-proof' },
  synReplayed: { direction: 'ingress', action: 'drop', reason: 'replayed-syn' },
  synAckVerified: { direction: 'ingress', action: 'accept', reason: 'ok-kernel' },
  synAckBadProof: { direction: 'ingress', action: 'drop', reason: 'bad-proof' },
  synSent: { direction: 'egress', action: 'accept', reason: 'ok-kernel' },
  synNoIdentity: { direction: 'ingress', action: 'drop', reason: 'no-identity' },
  synSourceLimited: { direction: 'ingress', action: 'drop', reason: 'source-rate-limited' },
  podSynAccepted: { direction: 'ingress', action: 'accept', reason: 'ok-kernel' },
};

export function kernelVerdicts(counters: Readonly<Record<FastCounter, number>>): VerdictCount[] {
  return sumVerdicts(
    FAST_COUNTERS.flatMap((name) => {
      const verdict = VERDICT_OF[name];
      const count = counters[name];
      return verdict === undefined || count === 0 ? [] : [{ ...verdict, count }];
    }),
  );
}

/** An address as the maps hold it. */
export function addressKey(text: string): Buffer {
  const out = Buffer.alloc(16);
  if (!text.includes(':')) {
    out[10] = 0xff;
    out[11] = 0xff;
    text.split('.').forEach((part, index) => (out[12 + index] = Number(part)));
    return out;
  }
  canonicalAddress(text)
    .split(':')
    .forEach((group, index) => out.writeUInt16BE(Number.parseInt(group, 16), index * 2));
  return out;
}

function u16(buf: Buffer, offset: number, value: number): void {
  if (LITTLE) buf.writeUInt16LE(value, offset);
  else buf.writeUInt16BE(value, offset);
}

function u32(buf: Buffer, offset: number, value: number): void {
  if (LITTLE) buf.writeUInt32LE(value >>> 0, offset);
  else buf.writeUInt32BE(value >>> 0, offset);
}

/** struct excluded_key: an LPM prefix over the 16-byte address (IPv4 prefixes sit under ::ffff:0:0/96). */
export function excludedKey(cidr: string): Buffer {
  const [address, prefix] = cidr.split('/') as [string, string];
  const key = Buffer.alloc(20);
  u32(key, 0, (address.includes(':') ? 0 : 96) + Number(prefix));
  addressKey(address).copy(key, 4);
  return key;
}

/** struct client_key: destination address and port, and the local workload (its pod, its cgroup workload, else its uid). */
export function clientKey(serverAddress: string, port: number, owner: KernelOwner): Buffer {
  const key = Buffer.alloc(KEY_SIZE.fast_clients);
  addressKey(serverAddress).copy(key, 0);
  u16(key, 16, port);
  u16(key, 18, owner.kind);
  u32(key, 20, owner.id);
  return key;
}

/** A fast_workloads key: a cgroup id (the cgroup directory's inode number). */
export function cgroupKey(id: bigint): Buffer {
  const key = Buffer.alloc(8);
  if (LITTLE) key.writeBigUInt64LE(id);
  else key.writeBigUInt64BE(id);
  return key;
}

/** A 32-bit value in the host's byte order (a workload number in fast_workloads and fast_owners). */
export function u32Value(value: number): Buffer {
  const out = Buffer.alloc(4);
  u32(out, 0, value);
  return out;
}

/** A 32-bit number in the host's byte order at `offset` (a map value, an event field). */
export function readU32(bytes: Buffer, offset = 0): number {
  return LITTLE ? bytes.readUInt32LE(offset) : bytes.readUInt32BE(offset);
}

/**
 * A Unix second as the kernel holds it (whole, unsigned 32 bits): an entry's `expires`, from which
 * the kernel voids the entry, and the config's `alive_until`.
 */
function kernelSecond(seconds: number): number {
  return Math.min(Math.max(Math.floor(seconds), 0), 0xffffffff);
}

/** struct client_value: fast id, the second it expires, and key. */
export function clientValue(fastId: number, fastKey: Buffer, expiresAt: number): Buffer {
  const value = Buffer.alloc(8 + FAST_KEY_BYTES);
  u32(value, 0, fastId);
  u32(value, 4, kernelSecond(expiresAt));
  fastKey.copy(value, 8);
  return value;
}

/** struct server_key: peer address, local address, fast id, local port. */
export function serverKey(peerAddress: string, localAddress: string, fastId: number, port: number): Buffer {
  const key = Buffer.alloc(KEY_SIZE.fast_servers);
  addressKey(peerAddress).copy(key, 0);
  addressKey(localAddress).copy(key, 16);
  u32(key, 32, fastId);
  u16(key, 36, port);
  return key;
}

/** struct server_value: key, the policy verdict, whether it rests on this agent's previous keys, and the second it expires. */
export function serverValue(fastKey: Buffer, allowed: boolean, retiring: boolean, expiresAt: number): Buffer {
  const value = Buffer.alloc(FAST_KEY_BYTES + 16);
  fastKey.copy(value, 0);
  u32(value, FAST_KEY_BYTES, allowed ? 1 : 0);
  u32(value, FAST_KEY_BYTES + 4, retiring ? 1 : 0);
  u32(value, FAST_KEY_BYTES + 8, kernelSecond(expiresAt));
  return value;
}

/** struct pod_pair_key (fast_pod_pairs): a node's client pod, its server pod and the server pod's port. */
export function podPairKey(clientAddress: string, serverAddress: string, port: number): Buffer {
  const key = Buffer.alloc(KEY_SIZE.fast_pod_pairs);
  addressKey(clientAddress).copy(key, 0);
  addressKey(serverAddress).copy(key, 16);
  u16(key, 32, port);
  return key;
}

/** struct pod_pair_value: the second it expires; `deferred` for a pod and a service address (judged after the DNAT). */
export function podPairValue(expiresAt: number, deferred = false): Buffer {
  const value = Buffer.alloc(8);
  u32(value, 0, kernelSecond(expiresAt));
  u32(value, 4, deferred ? 1 : 0);
  return value;
}

/** struct owner_key (fast_owners): a local connection by its local address and port and its ISN, which a destination NAT leaves alone. */
export function ownerKey(localAddress: string, localPort: number, isn: number): Buffer {
  const key = Buffer.alloc(KEY_SIZE.fast_owners);
  addressKey(localAddress).copy(key, 0);
  u32(key, 16, isn);
  u16(key, 20, localPort);
  return key;
}

/** struct flow_key (fast_flows): one end's view of a connection, its local address and port first. */
export function flowKey(localAddress: string, localPort: number, remoteAddress: string, remotePort: number): Buffer {
  const key = Buffer.alloc(KEY_SIZE.fast_flows);
  addressKey(localAddress).copy(key, 0);
  addressKey(remoteAddress).copy(key, 16);
  u16(key, 32, localPort);
  u16(key, 34, remotePort);
  return key;
}

/** Bytes of a struct flow_value (fast_flows). */
export const FLOW_VALUE_BYTES = 8;

/** struct flow_value: on the server's end, the fast id its kernel proved; whether the connection skips conntrack. */
export function flowValue(provenPeerFastId: number | null, untracked: boolean): Buffer {
  const value = Buffer.alloc(FLOW_VALUE_BYTES);
  u32(value, 0, provenPeerFastId ?? 0);
  value[4] = provenPeerFastId === null ? 0 : 1;
  value[5] = untracked ? 1 : 0;
  return value;
}

/** The fast id a struct flow_value names as the peer the server's kernel proved; null on a client's end. */
export function provenPeerFastId(value: Buffer): number | null {
  return value[4] === 1 ? readU32(value) : null;
}

export interface FastConfig {
  realtimeOffsetNs: bigint;
  windowSeconds: number;
  acceptMark: number;
  clientMark: number;
  /** Share of accepted fast SYNs reported as events (0..1). */
  acceptSample: number;
  /** SYNs a second per source the kernel passes on to the queue (0: no limit). */
  sourceRate: number;
  /** SYNs a source's bucket holds (at most sourceRate). */
  sourceBurst: number;
  /** Set on a SYN charged to its source's bucket. */
  budgetMark: number;
  /** Set on every packet of a connection the fast path judged, to skip conntrack (0: kept). */
  untrackedMark: number;
  /** Entries in fast_workloads (0: the connect-time cgroup walk is skipped). */
  workloadCgroups: number;
  /** Unix second after which the programs judge nothing (no agent vouches for them). */
  vouchedUntil: number;
  /** The agent stopped and kept the programs, failing closed: a first-contact SYN to a closed port is dropped. */
  agentAway: boolean;
  /** The agent's network namespace: only its sockets connect fast. */
  netnsCookie: bigint;
  /** What this host routes is its own to judge (a node's pods); otherwise only SYNs delivered here are. */
  routedWorkloads: boolean;
  /** Set on a local pod's fast SYN where it enters the node: the rules let it by on both hooks. */
  podMark: number;
  /** Set, with untrackedMark, on a fast SYN or SYN-ACK the kernel proved: the rules need not walk a chain to mark it judged (0: they do). */
  judgedMark: number;
  /** Set on a node's pod's SYN to a service address it reached a pod of the node or another host through before: the rules judge it after the DNAT (0: not deferred). */
  deferMark: number;
  /** This host translates its own output (a local DNAT): a uid's connect without an entry names itself in fast_owners too. */
  nameUidOwners: boolean;
  /** NAT rules appeared after untrackedMark was set: connections judged from now on keep conntrack. */
  trackNew: boolean;
}

/** struct fast_config (88 bytes). */
export function configValue(config: FastConfig): Buffer {
  const value = Buffer.alloc(88);
  if (LITTLE) value.writeBigInt64LE(config.realtimeOffsetNs, 0);
  else value.writeBigInt64BE(config.realtimeOffsetNs, 0);
  u32(value, 8, config.windowSeconds);
  u32(value, 12, config.acceptMark);
  u32(value, 16, config.clientMark);
  u32(value, 20, 1);
  u32(value, 24, Math.min(0xffffffff, Math.floor(config.acceptSample * 2 ** 32)));
  u32(value, 28, config.sourceRate);
  u32(value, 32, config.budgetMark);
  u32(value, 36, config.untrackedMark);
  u32(value, 40, config.workloadCgroups);
  u32(value, 44, config.sourceBurst);
  u32(value, 48, kernelSecond(config.vouchedUntil));
  u32(value, 52, config.agentAway ? 1 : 0);
  if (LITTLE) value.writeBigUInt64LE(config.netnsCookie, 56);
  else value.writeBigUInt64BE(config.netnsCookie, 56);
  u32(value, 64, config.routedWorkloads ? 1 : 0);
  u32(value, 68, config.podMark);
  u32(value, 72, config.judgedMark);
  u32(value, 76, config.deferMark);
  u32(value, 80, config.nameUidOwners ? 1 : 0);
  u32(value, 84, config.trackNew ? 1 : 0);
  return value;
}

/** struct fast_event, as the ring buffer hands it over. */
export const EVENT_BYTES = 56;

export interface KernelEvent {
  counter: FastCounter;
  fastId: number;
  source: string;
  destination: string;
  sourcePort: number;
  destinationPort: number;
  /** Drops of the same (source, cause) folded since its previous event. */
  folded: number;
  /** clientRetired: the local workload whose entry for the server (source) went; otherwise null. */
  owner: KernelOwner | null;
}

/** An address as the maps hold it, as text in the form the datapath gives (IPv4 dotted, IPv6 8 groups). */
export function addressText(bytes: Buffer): string {
  const mapped = bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
  return mapped ? formatAddress(bytes, 12, 4) : formatAddress(bytes, 0, 16);
}

/** The events in a ring-buffer read; a record of an unknown counter is skipped. */
export function decodeEvents(records: Buffer): KernelEvent[] {
  const events: KernelEvent[] = [];
  const read32 = (offset: number) => readU32(records, offset);
  const read16 = (offset: number) => (LITTLE ? records.readUInt16LE(offset) : records.readUInt16BE(offset));
  for (let at = 0; at + EVENT_BYTES <= records.length; at += EVENT_BYTES) {
    const counter = FAST_COUNTERS[read32(at)];
    if (counter === undefined) continue;
    const ownerKind = read32(at + 48);
    events.push({
      counter,
      fastId: read32(at + 4),
      source: addressText(records.subarray(at + 8, at + 24)),
      destination: addressText(records.subarray(at + 24, at + 40)),
      sourcePort: read16(at + 40),
      destinationPort: read16(at + 42),
      folded: read32(at + 44),
      owner: counter !== 'clientRetired' || (ownerKind !== OWNER_UID && ownerKind !== OWNER_WORKLOAD && ownerKind !== OWNER_POD) ? null : { kind: ownerKind, id: read32(at + 52) },
    });
  }
  return events;
}

/** The verdict a counter stands for (direction, action, reason), if it is one. */
export function verdictOf(counter: FastCounter): Omit<VerdictCount, 'count'> | undefined {
  return VERDICT_OF[counter];
}
