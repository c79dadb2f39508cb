// Typed face of the native NFQUEUE addon (native/src/nfqueue.cc). JS owns every buffer the
// addon touches: packets are received straight into `input`, described by `meta`, and counted
// in `counters`, so reading a batch or a counter costs no call into native code.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { SynpassError } from '../errors.ts';

export class AddonError extends SynpassError<'not-built' | 'version-mismatch'> {
  override readonly name = 'AddonError';
}

export const NF_DROP = 0;
export const NF_ACCEPT = 1;
export const NF_REPEAT = 4;
export type NfVerdict = typeof NF_DROP | typeof NF_ACCEPT | typeof NF_REPEAT;

/** Netfilter hook numbers as the kernel reports them in NFQA_PACKET_HDR. */
export const HOOK_PRE_ROUTING = 0;
export const HOOK_LOCAL_IN = 1;
export const HOOK_FORWARD = 2;
export const HOOK_LOCAL_OUT = 3;
export const HOOK_POST_ROUTING = 4;

/** Field positions of one packet's entry in the meta array. */
export const Meta = {
  PacketId: 0,
  Queue: 1,
  Hook: 2,
  Mark: 3,
  Offset: 4,
  Length: 5,
  OriginalLength: 6,
  Flags: 7,
  Uid: 8,
  Gid: 9,
} as const;

/** Meta value of Uid/Gid when the packet has no local socket owner (forwarded, SYN-ACK). */
export const NO_OWNER = 0xffffffff;

export const META_FLAG_CHECKSUM_PARTIAL = 1 << 0;
export const META_FLAG_CHECKSUM_UNVERIFIED = 1 << 1;
export const META_FLAG_GSO = 1 << 2;
export const META_FLAG_TRUNCATED = 1 << 3;

/** Counter slots in the order the addon writes them. */
export const QUEUE_COUNTERS = [
  'received',
  'batches',
  'accepted',
  'dropped',
  'repeated',
  'rewritten',
  'overruns',
  'recvErrors',
  'verdictErrors',
  'sendErrors',
  'truncated',
  'malformed',
] as const;
export type QueueCounterName = (typeof QUEUE_COUNTERS)[number];

export interface NativeQueueOptions {
  queues: number[];
  maxLength: number;
  failOpen: boolean;
  socketBufferBytes: number;
  input: Uint8Array;
  meta: Uint32Array;
  counters: Float64Array;
  onBatch: (count: number) => void;
  /** Called once the socket has no packet left, after one or more batches. */
  onDrained?: () => void;
}

export interface NativeQueue {
  start(): void;
  verdict(packetId: number, queue: number, verdict: NfVerdict, mark: number, payload?: Uint8Array, length?: number): void;
  flush(): void;
  close(): void;
}

export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

/** One direction of a conntrack entry: addresses of 4 or 16 bytes, ports in host order. */
export interface ConntrackTuple {
  source: Buffer;
  sourcePort: number;
  destination: Buffer;
  destinationPort: number;
}

/** What fastPathLoad kept: the pinned maps' file descriptors by name, and the programs attached by file descriptor. */
export interface FastPathLoaded {
  maps: Record<string, number>;
  /** The tc ingress program, for every interface, also those that appear later. */
  programFd: number;
  /** The tc egress program, beside it on every interface. */
  egressFd: number;
  sockopsFd: number;
}

/** The interfaces the tc program took, and the ones it did not, with why. */
export interface FastPathInterfaces {
  attached: string[];
  skipped: { name: string; reason: string }[];
}

/** enum sweep_outcome (native/bpf/fast_path.h). */
export const SweepOutcome = { Enabled: 1, Already: 2, Unsupported: 3 } as const;

/** A listener the sweep met in the fast path's cgroup. */
export interface SweptListener {
  port: number;
  family: 4 | 6;
  outcome: (typeof SweepOutcome)[keyof typeof SweepOutcome];
}

/** An addon call that failed in the kernel carries its errno. */
export interface ErrnoError extends Error {
  errno?: number;
}

export interface NativeBinding {
  NfQueue: new (options: NativeQueueOptions) => NativeQueue;
  /**
   * Loads the kernel programs and pins their maps under `pinDir`; attaches nothing. Programs a
   * previous run kept are told first that an agent is back (their config's `agent_away` cleared).
   */
  fastPathLoad(objectPath: string, pinDir: string): FastPathLoaded;
  /**
   * Attaches loaded programs, replacing in place what a previous run kept: sock_ops on the cgroup
   * (the link pinned under `pinDir`), tc ingress and egress on the interfaces (tcx links pinned
   * there too, or clsact filters on a kernel before 6.6).
   * `tookOver`: a kept link on that cgroup took the new program.
   */
  fastPathAttachPrograms(pinDir: string, cgroupPath: string, sockopsFd: number, programFd: number, egressFd: number, interfaces: readonly string[]): FastPathInterfaces & { tookOver: boolean };
  /** Takes our tcx links and tc filters off every interface of this namespace, detaches the cgroup link, removes the pins. */
  fastPathDetach(pinDir: string): { tcDetached: number; linkDetached: boolean };
  /**
   * Runs the listener sweep once over this network namespace, on a worker thread: each listener
   * in `cgroupPath` or below gets its SYN-ACKs handed to the sock_ops program. Nothing stays
   * loaded. Rejects with the errno when the kernel refuses (EPERM: no CAP_PERFMON).
   */
  fastPathSweepListeners(objectPath: string, cgroupPath: string): Promise<SweptListener[]>;
  /** Attaches the tc programs to one more interface (as fastPathAttachPrograms; tcx links pinned under `pinDir`): null, or why not. */
  fastPathAttachInterface(pinDir: string, programFd: number, egressFd: number, name: string): string | null;
  mapUpdate(fd: number, key: Uint8Array, value: Uint8Array, flags: number): void;
  mapDelete(fd: number, key: Uint8Array): boolean;
  mapLookup(fd: number, key: Uint8Array, valueOut: Uint8Array): boolean;
  /** mapLookup and mapDelete in one system call (hash maps). */
  mapTake(fd: number, key: Uint8Array, valueOut: Uint8Array): boolean;
  mapCount(fd: number, keySize: number): number;
  /**
   * Entry i is `keys[i]` -> `values[i]` (`keySize` and `valueSize` bytes each), in one system call.
   * Returns the indices of entries the kernel refused (a full hash map), each skipped.
   */
  mapWriteBatch(fd: number, keys: Uint8Array, keySize: number, values: Uint8Array, valueSize: number): number[];
  /** Deletes the entries of `keys` (`keySize` bytes each) in one system call; absent ones are skipped. Returns how many it deleted. */
  mapDeleteBatch(fd: number, keys: Uint8Array, keySize: number): number;
  /** Each slot of a per-CPU u64 array, summed over CPUs. */
  counterTotals(fd: number, count: number): number[];
  /** Reads the fast path's event ring buffer on the event loop; `onEvents` gets whole records. */
  KernelEvents: new (ringFd: number, onEvents: (records: Buffer) => void) => { close(): void };
  /**
   * Subscribes to this network namespace's nftables change notifications, read on the event loop:
   * `onChange` runs once per wake-up with how many arrived and whether the kernel dropped some
   * (a full socket buffer). Throws (with `errno`) when the kernel refuses the subscription.
   */
  RulesetEvents: new (onChange: (notifications: number, lost: boolean) => void) => { close(): void };
  /** CLOCK_REALTIME minus CLOCK_BOOTTIME in nanoseconds. */
  realtimeOffsetNs(): bigint;
  /** The cookie of this process's network namespace (0: the kernel cannot say). */
  netnsCookie(): bigint;
  closeFd(fd: number): void;
  peerCredentials(fd: number): PeerCredentials;
  /**
   * The TCP conntrack entry of this network namespace with the given tuple as one of its two
   * directions; null when conntrack has none. One ctnetlink request; throws (with `errno`) when
   * the kernel refuses it.
   */
  conntrackEntry(family: 4 | 6, source: Uint8Array, sourcePort: number, destination: Uint8Array, destinationPort: number): { original: ConntrackTuple; reply: ConntrackTuple } | null;
  /** Sends a whole IPv4 or IPv6 packet (header included, as written) to the destination its header names; throws (with `errno`) when the kernel refuses it. */
  sendRawPacket(packet: Uint8Array): void;
  /** Writes HMAC-SHA256(key, message[0, messageLength)) into the first 32 bytes of `out`. */
  hmacSha256: (key: Uint8Array, message: Uint8Array, messageLength: number, out: Uint8Array) => void;
  /** Fills `out` with HKDF-SHA256 (RFC 5869) of `ikm` under `salt` and `info`. */
  hkdfSha256: (ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, out: Uint8Array) => void;
  /** Whether `signature` (64 bytes) is the Ed25519 signature of `publicKey` (32 bytes, raw) over `message` (libsodium). */
  ed25519Verify: (publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array) => boolean;
  /** Writes the Ed25519 signature (64 bytes) of `secretKey` (64 bytes: seed, then public key) over `message` into `out` (libsodium). */
  ed25519Sign: (secretKey: Uint8Array, message: Uint8Array, out: Uint8Array) => void;
  /** Writes the X25519 shared secret of two raw 32-byte keys into `out`; false (and `out` zeroed) for a peer key of small order. */
  x25519: (privateKey: Uint8Array, publicKey: Uint8Array, out: Uint8Array) => boolean;
  SLOT_SIZE: number;
  META_STRIDE: number;
  COUNTER_COUNT: number;
  LAYOUT: AddonLayout;
}

/** The shared-memory layout as the addon describes it (native/src/nfqueue.cc, Layout()). */
export interface AddonLayout {
  /** Meta field names in slot order. */
  meta: string[];
  flags: Record<string, number>;
  /** Counter names in slot order. */
  counters: string[];
  noOwner: number;
}

/** The slot size and meta stride of this build, for buffers built without the addon (tests). */
export const META_STRIDE = Object.keys(Meta).length;

/**
 * The constants above, which the per-packet path reads without a property lookup on the addon,
 * against the layout the addon reports; null when they agree, else the first difference.
 */
export function layoutMismatch(layout: AddonLayout, stride: number): string | null {
  const meta = Object.entries(Meta).sort(([, a], [, b]) => a - b).map(([name]) => name[0]!.toLowerCase() + name.slice(1));
  if (stride !== META_STRIDE || meta.join() !== layout.meta.join()) return `meta fields ${layout.meta.join()} (this agent: ${meta.join()})`;
  const flags = { checksumPartial: META_FLAG_CHECKSUM_PARTIAL, checksumUnverified: META_FLAG_CHECKSUM_UNVERIFIED, gso: META_FLAG_GSO, truncated: META_FLAG_TRUNCATED };
  for (const [name, bit] of Object.entries(flags)) if (layout.flags[name] !== bit) return `flag ${name} = ${layout.flags[name] ?? 'missing'} (this agent: ${bit})`;
  if (QUEUE_COUNTERS.join() !== layout.counters.join()) return `counters ${layout.counters.join()} (this agent: ${QUEUE_COUNTERS.join()})`;
  if (layout.noOwner !== NO_OWNER) return `no-owner value ${layout.noOwner}`;
  return null;
}

// From agent/src/native (run through tsx) or dist/agent/src/native (compiled).
function builtFile(name: string): string[] {
  return [`../../../native/build/Release/${name}`, `../../../../native/build/Release/${name}`].map((relative) => fileURLToPath(new URL(relative, import.meta.url)));
}
const addonCandidates = builtFile('synpass_nfq.node');

function builtObject(name: string): string {
  const candidates = builtFile(name);
  return candidates.find((candidate) => existsSync(candidate)) ?? candidates[0]!;
}

/** The compiled kernel programs (native/bpf/fast_path.bpf.c), built beside the addon. */
export function fastPathObjectPath(): string {
  return builtObject('fast_path.bpf.o');
}

/** The compiled listener sweep (native/bpf/listener_sweep.bpf.c), built beside the addon. */
export function listenerSweepObjectPath(): string {
  return builtObject('listener_sweep.bpf.o');
}
let binding: NativeBinding | undefined;

export function loadBinding(): NativeBinding {
  if (binding === undefined) {
    const addonPath = addonCandidates.find((candidate) => existsSync(candidate)) ?? addonCandidates[0]!;
    let loaded: NativeBinding;
    try {
      loaded = createRequire(import.meta.url)(addonPath) as NativeBinding;
    } catch (cause) {
      throw new AddonError('not-built', `synpass native addon not built at ${addonPath}: run scripts/setup (or npm run build:native)`, { path: addonPath }, { cause });
    }
    const mismatch = (loaded.LAYOUT as AddonLayout | undefined) === undefined ? 'it reports no layout' : layoutMismatch(loaded.LAYOUT, loaded.META_STRIDE);
    if (mismatch !== null) {
      throw new AddonError('version-mismatch', `synpass native addon does not match this agent version (${mismatch}): rebuild it (npm run build:native)`);
    }
    binding = loaded;
  }
  return binding;
}

export interface QueueBuffers {
  input: Uint8Array;
  meta: Uint32Array;
  counters: Float64Array;
  metaStride: number;
}

/** Buffers for `slots` packets of up to `slotSize` bytes each, in the layout the addon checked. */
export function queueBuffers(slots: number, slotSize: number): QueueBuffers {
  return {
    input: new Uint8Array(slotSize * slots),
    meta: new Uint32Array(META_STRIDE * slots),
    counters: new Float64Array(QUEUE_COUNTERS.length),
    metaStride: META_STRIDE,
  };
}

/** Allocates the JS-owned buffers for a queue receiving up to `slots` packets per batch. */
export function allocateQueueBuffers(slots: number): QueueBuffers {
  return queueBuffers(slots, loadBinding().SLOT_SIZE);
}

export function readQueueCounters(counters: Float64Array): Record<QueueCounterName, number> {
  const result = {} as Record<QueueCounterName, number>;
  QUEUE_COUNTERS.forEach((name, index) => {
    result[name] = counters[index] ?? 0;
  });
  return result;
}
