// The kernel fast path, owned: the programs loaded and pinned (addon, libbpf) and attached once
// their maps hold what the agent already knows, the maps filled from what the handshake proved,
// judged again on every policy change, retired on key changes, swept as entries expire, and
// detached (or kept) at stop. The kernel does the per-packet work; this class runs only at first
// contact, on reloads and once a second.
import { statSync } from 'node:fs';
import { constants } from 'node:os';
import { join } from 'node:path';
import { fastPathObjectPath, listenerSweepObjectPath, loadBinding, type ErrnoError, type FastPathInterfaces, type FastPathLoaded, type NativeBinding } from '../native/addon.ts';
import { SynpassError } from '../errors.ts';
import type { TableSize } from '../datapath/handler.ts';
import type { VerdictCount } from '../datapath/engine.ts';
import type { DeferPrograms } from '../datapath/rules.ts';
import type { Authorizer } from '../handshake/authorizer.ts';
import type { AdmittedClient, FastServer, KernelPath, LocalWorkloadAt, PodPair, ServiceRoute, SocketOwner } from '../handshake/kernel-path.ts';
import type { VerifiedIdentity } from '../token/identity-token.ts';
import type { ClientToSave, ServerToSave } from './saved-tables.ts';
import { refusedSweep, summarizeSweep, type ListenerSweep } from './listener-sweep.ts';
import {
  addressKey,
  cgroupKey,
  clientKey,
  clientValue,
  configValue,
  decodeEvents,
  excludedKey,
  FAST_COUNTERS,
  FLOW_VALUE_BYTES,
  flowKey,
  KEY_SIZE,
  kernelVerdicts,
  OWNER_POD,
  OWNER_UID,
  OWNER_WORKLOAD,
  MAP_CAPACITY,
  MAX_EXCLUDED_NETWORKS,
  PORT_COUNT,
  ownerKey,
  podPairKey,
  podPairValue,
  provenPeerFastId,
  readU32,
  serverKey,
  serverValue,
  u32Value,
  type FastCounter,
  type KernelEvent,
  type KernelOwner,
} from './layouts.ts';

export class KernelPathError extends SynpassError<'attach' | 'map'> {
  override readonly name = 'KernelPathError';
}

export interface KernelFastPathOptions {
  pinDir: string;
  cgroup: string;
  interfaces: readonly string[];
  /** Source networks synpass never touches (`excluded`): the kernel cloak lets their SYNs by. */
  excluded: readonly string[];
  windowSeconds: number;
  /** Set on an accepted fast SYN and on the client's handshake ACK (the rules' `pass` and `release` bits): never queued, connection released. */
  acceptMark: number;
  /** Set on a fast SYN (`pass`): the egress rules do not queue it. */
  clientMark: number;
  /** Where interfaces that appear later are found (null: only `interfaces`, as configured). */
  newInterfaces: (() => readonly string[]) | null;
  /** Share of accepted fast SYNs reported as events for the flow log (0: none; drops always are, gated per source). */
  acceptSample: number;
  /** SYNs a second per source (IPv4 address, IPv6 /64) passed on to the queue (0: no limit). */
  sourceRate: number;
  /** SYNs a source's bucket holds: its burst (at most sourceRate). */
  sourceBurst: number;
  /** Set on a SYN charged to its source's bucket (`budgeted`): the rules' hashlimit skips it. */
  budgetMark: number;
  /** The cgroup v2 directories that name local workloads (`workloads[].cgroups`), by workload number. */
  workloadCgroups: readonly WorkloadCgroup[];
  /** What this host routes is its own to judge (a Kubernetes node's pods): see RuleOptions.routedWorkloads. */
  routedWorkloads?: boolean;
  /** Set on a local pod's fast SYN where it enters the node (`pass` and `judged`): the rules let it by on both hooks (0: pods connect through the queue). */
  podMark?: number;
  /** Set (the rules' `judged` bit), with the untracked mark, on a fast SYN or SYN-ACK the kernel proved, as the rules' mark chain would: they let it by unwalked (0: the chain marks it). */
  judgedMark?: number;
  now?: () => number;
}

/** A cgroup v2 directory whose sockets (and its descendants') belong to workload `workload`. */
export interface WorkloadCgroup {
  workload: number;
  directory: string;
}

/** A server entry's new value, on its way to the kernel. */
interface ServerRewrite {
  id: string;
  record: ServerRecord;
  value: Buffer;
}

/** Ids for the kernel to catch up with; after a rotation, server records older than its generation retire at their turn. */
interface BacklogWalk {
  ids: Iterator<string>;
  retire: { generation: number; untilSeconds: number } | null;
}

interface ServerRecord {
  entry: AdmittedClient;
  allowed: boolean;
  /**
   * This agent's key generation at admission (KernelFastPath.generation). Older ones were proven
   * under previous keys: retiring, the kernel's SYN-ACKs tell the client so.
   */
  generation: number;
}

const BPF_ANY = 0;
/**
 * How long a policy edit's re-judging of the tables may hold the event loop at a time. Judging
 * 65,536 server and 65,536 client entries of as many peers took 514-732 ms in one go
 * (scripts/benchmarks/kernel-tables.ts), while no packet was judged; in slices the queue is
 * served between them.
 */
export const REJUDGE_SLICE_MS = 5;
/** Entries judged between two looks at the clock. */
const REJUDGE_BETWEEN_CLOCKS = 64;
/**
 * How long the kernel's share of a key rotation or a flush may hold the event loop at a time. In
 * one go, over 65,536 server and 65,536 client entries, they held it 169-195 and 25-33 ms
 * (scripts/benchmarks/kernel-tables.ts).
 */
export const BACKLOG_SLICE_MS = 5;
/** Kernel entries written or deleted in one batch of a backlog slice, between two looks at the clock. */
const BACKLOG_BATCH = 1024;

/** A policy edit's walk over the tables, slice by slice (reauthorize). */
interface Rejudging {
  authorizer: Authorizer;
  localAt: LocalWorkloadAt;
  /** The tables walked, and where the walk is in each: a flush or a rotation replaces a table, and the rest of the old one is not judged. */
  serverTable: Map<string, ServerRecord>;
  clientTable: Map<string, FastServer>;
  pairTable: Map<string, PodPair>;
  servers: Iterator<[string, ServerRecord]>;
  clients: Iterator<[string, FastServer]>;
  pairs: Iterator<[string, PodPair]>;
  started: number;
  slices: number;
  /** Resolved when the walk is done or a newer one replaced it. */
  settled: Promise<void>;
  settle: () => void;
}
/** The keys of the port table (an array map): 0..PORT_COUNT-1, in the host's byte order; made at the first write. */
let portKeys: Uint8Array | null = null;
/**
 * How long the programs go on judging past the agent's last tick: a stalled or crashed agent's
 * kernel keeps known pairs for this long, then hands every handshake to the rules.
 */
export const VOUCH_SECONDS = 30;
/** Retired client entries kept for whois, the most recent first to stay (retiredClients). */
const RETIRED_CLIENTS_KEPT = 4096;

/** The peer a fast-path connection came from, for whois. */
export interface FastPeer {
  identity: VerifiedIdentity;
  fastId: number;
}

export class KernelFastPath implements KernelPath {
  private servers = new Map<string, ServerRecord>();
  private clients = new Map<string, FastServer>();
  /**
   * Client entries the kernel dropped because their server said they were retiring, the last few
   * thousand, until they would have expired: whois still names the server of the connections
   * they proved (the one that brought the news among them) until the next first contact to that
   * server and port makes a new entry.
   */
  private readonly retiredClients = new Map<string, FastServer>();
  /** On a node: pairs of its pods judged for a port, by fast_pod_pairs key. */
  private podPairs = new Map<string, PodPair>();
  /** On a node: its pods' service routes, judged after the DNAT, in the same kernel table (fast_pod_pairs, deferred). */
  private serviceRoutes = new Map<string, ServiceRoute>();
  /** The mark a pod's SYN to one of its service routes gets, once the rules judge such SYNs after the DNAT (0: not yet, or never). */
  private deferMark = 0;
  /** Whether uids' connects name themselves in fast_owners (nameUidOwnersAfterNat). */
  private nameUidOwners = false;
  /** Whether connections judged from now on keep conntrack although untrackedMark is set (keepConntrackFromNow). */
  private trackNew = false;
  private walk: Rejudging | null = null;
  private rejudgeTimer: NodeJS.Immediate | null = null;
  /**
   * Entries the kernel may hold otherwise than these tables after a rotation or a flush, which
   * change the tables at once and the kernel in slices: their ids, as walks over the tables they
   * came from, and about how many are left. Each id is made to agree with the tables as they are
   * at its turn, so an entry written again since is never undone.
   */
  private readonly backlog = { servers: [] as BacklogWalk[], clients: [] as BacklogWalk[], left: 0 };
  /** Rotations so far: entries admitted before the last one rest on previous keys, retiring (or soon to be) in the kernel. */
  private generation = 0;
  private backlogTimer: NodeJS.Immediate | null = null;
  /** Why the kernel stopped catching up with a rotation or a flush early, if it did (null otherwise). */
  backlogError: string | null = null;
  /** How long the last policy edit's walk took, in how many slices, and why it ended early if it did (null before the first). */
  lastRejudging: { milliseconds: number; slices: number; error?: string } | null = null;
  private readonly now: () => number;
  /** Entries the kernel refused (a full map) or that failed to write, counted for status. */
  refused = 0;
  /** Ports whose SYNs without any proof the kernel drops, as last written. */
  private closed = new Uint8Array(PORT_COUNT);
  private closedCount = 0;
  private events: { close(): void } | null = null;
  /** The `untracked` mark bit while the fast path's connections skip conntrack (0: kept). */
  private untrackedMark = 0;
  /** The workload cgroups as last written to the kernel: cgroup id -> workload number. */
  private workloadCgroupIds = new Map<bigint, number>();
  /** Unix second until which the programs judge (fast_config.alive_until), moved on every tick. */
  private vouchedUntil: number;
  /** Set by keep: no agent checks first-contact markers (fast_config.agent_away). */
  private agentAway = false;
  /** This agent's network namespace: only its sockets connect fast (fast_config.netns_cookie). */
  private readonly netnsCookie: bigint;
  /**
   * Local ports whose listener answered a handshake the kernel could take without the ready
   * option, each with whether it was reported yet. At most one entry per port.
   */
  private readonly unreadyListeners = new Map<number, boolean>();
  /** On a node: the pods that own client entries, by address: their number in fast_pods (never reused in a run) and their entries' ids. */
  private readonly pods = new Map<string, { number: number; ids: Set<string> }>();
  private nextPodNumber = 1;
  /** Pods whose fast SYNs reached the queue unvouched (podUnvouched): no entries until an interface is added. */
  private readonly unvouchedPods = new Set<string>();

  /** The interfaces the tc program is on (none before attachPrograms), and those it is not on, with why. */
  readonly interfaces: FastPathInterfaces = { attached: [], skipped: [] };
  /** Whether attachPrograms took over programs a previous run kept attached (fastPathKeepSeconds). */
  tookOver = false;
  /** What the listener sweep did (null until it has run). */
  listenerSweep: ListenerSweep | null = null;

  private constructor(
    private readonly native: NativeBinding,
    private readonly options: KernelFastPathOptions,
    private readonly loaded: FastPathLoaded,
  ) {
    this.now = options.now ?? Date.now;
    this.vouchedUntil = this.now() / 1000 + VOUCH_SECONDS;
    this.netnsCookie = native.netnsCookie();
    for (const cidr of options.excluded) native.mapUpdate(this.map('fast_excluded'), excludedKey(cidr), Buffer.of(1), BPF_ANY);
    this.followWorkloadCgroups();
    this.writeConfig();
  }

  /**
   * Loads the programs and pins their maps, with this agent's settings written but nothing
   * attached: fill the maps, then attachPrograms. Throws KernelPathError with the kernel's reason.
   */
  static load(options: KernelFastPathOptions): KernelFastPath {
    if (options.excluded.length > MAX_EXCLUDED_NETWORKS) throw new KernelPathError('map', `more than ${MAX_EXCLUDED_NETWORKS} excluded networks`, { excluded: options.excluded.length });
    const native = loadBinding();
    let loaded: FastPathLoaded;
    try {
      loaded = native.fastPathLoad(fastPathObjectPath(), options.pinDir);
    } catch (cause) {
      // Missing CAP_BPF gives EPERM; a verifier that refuses what it would take from a more
      // privileged process, EACCES.
      const refused = [constants.errno.EPERM, constants.errno.EACCES].includes((cause as ErrnoError).errno ?? 0) ? ' (the kernel fast path needs CAP_BPF and CAP_NET_ADMIN)' : '';
      throw new KernelPathError('attach', `${(cause as Error).message}${refused}`, { pinDir: options.pinDir }, { cause });
    }
    return new KernelFastPath(native, options, loaded);
  }

  /**
   * The programs on the cgroup and the interfaces, each taking over in one step from what a
   * previous run kept there: until this call, kept programs judge from the previous run's maps.
   * Throws KernelPathError when the sock_ops program could not be attached (nothing is left then).
   */
  attachPrograms(): void {
    const { pinDir, cgroup, interfaces } = this.options;
    try {
      const taken = this.native.fastPathAttachPrograms(pinDir, cgroup, this.loaded.sockopsFd, this.loaded.programFd, this.loaded.egressFd, interfaces);
      this.interfaces.attached.push(...taken.attached);
      this.interfaces.skipped.push(...taken.skipped);
      this.tookOver = taken.tookOver;
    } catch (cause) {
      this.release();
      throw new KernelPathError('attach', (cause as Error).message, { pinDir, cgroup }, { cause });
    }
  }

  /**
   * Listeners that were open before the programs were attached (a host's services at the agent's
   * first start, after a reboot) never ask the sock_ops program for SYN-ACK options: the sweep,
   * once the programs are attached, makes them ask, so their known pairs reach the kernel too.
   * Without it (no CAP_PERFMON, no BTF, a kernel before 6.12) they stay on the queue, and
   * listenersOnQueue names them as they are met. It runs on a worker thread; never rejects, and
   * sets listenerSweep.
   */
  async sweepListeners(): Promise<void> {
    try {
      this.listenerSweep = summarizeSweep(await this.native.fastPathSweepListeners(listenerSweepObjectPath(), this.options.cgroup));
    } catch (error) {
      this.listenerSweep = refusedSweep(error);
    }
  }

  /** Takes everything the fast path attached and pinned away (also what a crashed run left). */
  static detach(pinDir: string): { tcDetached: number; linkDetached: boolean } {
    return loadBinding().fastPathDetach(pinDir);
  }

  /** Where the loader pins the programs iptables' bpf match runs after a DNAT (native/src/bpf_loader.cc, kServiceBackendPin and kTranslatedSynPin). */
  get deferPrograms(): DeferPrograms {
    return { backend: join(this.options.pinDir, 'service_backend'), translated: join(this.options.pinDir, 'translated_syn') };
  }

  /** The mark a local pod's vouched fast SYN gets (0: pods connect through the queue). */
  private get podMark(): number {
    return this.options.podMark ?? 0;
  }

  private map(name: keyof typeof MAP_CAPACITY | 'fast_config' | 'fast_counters' | 'fast_cloak' | 'fast_excluded' | 'fast_events'): number {
    return this.loaded.maps[name]!;
  }

  private write(map: keyof typeof MAP_CAPACITY, key: Buffer, value: Buffer): boolean {
    try {
      this.native.mapUpdate(this.map(map), key, value, BPF_ANY);
      return true;
    } catch (error) {
      // A full map (E2BIG) refuses the entry: that pair stays on the queue path.
      if ((error as ErrnoError).errno === undefined) throw error;
      this.refused++;
      return false;
    }
  }

  /** The programs' settings, with the kernel's wall clock (boot clock plus an offset) in step with this host's. */
  private writeConfig(): void {
    const value = configValue({
      realtimeOffsetNs: this.native.realtimeOffsetNs(),
      windowSeconds: this.options.windowSeconds,
      acceptMark: this.options.acceptMark,
      clientMark: this.options.clientMark,
      acceptSample: this.options.acceptSample,
      sourceRate: this.options.sourceRate,
      sourceBurst: this.options.sourceBurst,
      budgetMark: this.options.budgetMark,
      untrackedMark: this.untrackedMark,
      workloadCgroups: this.workloadCgroupIds.size,
      vouchedUntil: this.vouchedUntil,
      agentAway: this.agentAway,
      netnsCookie: this.netnsCookie,
      routedWorkloads: this.options.routedWorkloads === true,
      podMark: this.podMark,
      judgedMark: this.options.judgedMark ?? 0,
      deferMark: this.deferMark,
      nameUidOwners: this.nameUidOwners,
      trackNew: this.trackNew,
    });
    this.native.mapUpdate(this.map('fast_config'), Buffer.alloc(4), value, BPF_ANY);
  }

  /**
   * The workload cgroups' ids into the kernel, again whenever one changed: a unit restarted, or
   * started after the agent, has a new cgroup (a new id); a cgroup not there names nothing. Its
   * connects until then are named by their uid.
   */
  private followWorkloadCgroups(): void {
    const next = new Map<bigint, number>();
    for (const { workload, directory } of this.options.workloadCgroups) {
      // A cgroup v2 directory's inode number is the cgroup id the kernel reports.
      const id = statSync(directory, { bigint: true, throwIfNoEntry: false })?.ino;
      if (id !== undefined && !next.has(id)) next.set(id, workload);
    }
    const current = this.workloadCgroupIds;
    if (next.size === current.size && [...next].every(([id, workload]) => current.get(id) === workload)) return;
    for (const id of current.keys()) if (!next.has(id)) this.native.mapDelete(this.map('fast_workloads'), cgroupKey(id));
    for (const [id, workload] of next) this.native.mapUpdate(this.map('fast_workloads'), cgroupKey(id), u32Value(workload), BPF_ANY);
    this.workloadCgroupIds = next;
  }

  takeConnectionWorkload(localAddress: string, localPort: number, isn: number): number {
    if (this.workloadCgroupIds.size === 0) return 0;
    const key = ownerKey(localAddress, localPort, isn);
    const value = Buffer.alloc(4);
    // On the connect's path: one system call, not a lookup and a delete (about 15 us each here).
    if (!this.native.mapTake(this.map('fast_owners'), key, value)) return 0;
    return readU32(value);
  }

  /** From now on the connections it judges carry `mark`, which the notrack rules leave out of conntrack. */
  skipConntrack(mark: number): void {
    this.untrackedMark = mark;
    this.writeConfig();
  }

  /**
   * NAT rules appeared after skipConntrack: the connections it judges from now on keep conntrack,
   * since a NAT rule applies only to tracked ones. Those judged before keep their untracked mark.
   */
  keepConntrackFromNow(): void {
    this.trackNew = true;
    this.writeConfig();
  }

  admitClient(entry: AdmittedClient): boolean {
    const key = serverKey(entry.peerAddress, entry.localAddress, entry.fast.fastId, entry.port);
    const id = key.toString('latin1');
    if (!this.servers.has(id) && this.servers.size >= MAP_CAPACITY.fast_servers) {
      this.refused++;
      return false;
    }
    if (!this.write('fast_servers', key, serverValue(entry.fast.key, true, false, entry.expiresAt))) return false;
    this.servers.set(id, { entry, allowed: true, generation: this.generation });
    return true;
  }

  useServer(entry: FastServer): boolean {
    const pod = entry.owner.pod;
    if (pod !== undefined && this.podMark === 0) return false;
    if (pod !== undefined && this.unvouchedPods.has(pod)) return false;
    const owner = this.kernelOwner(entry.owner);
    if (owner === null) return false;
    const key = clientKey(entry.serverAddress, entry.port, owner);
    const id = key.toString('latin1');
    const full = !this.clients.has(id) && this.clients.size >= MAP_CAPACITY.fast_clients;
    if (full) this.refused++;
    if (full || !this.write('fast_clients', key, clientValue(entry.fast.fastId, entry.fast.key, entry.expiresAt))) {
      // A pod numbered for this entry alone gives its number back.
      if (pod !== undefined && this.pods.get(pod)?.ids.size === 0) this.releasePod(pod);
      return false;
    }
    this.clients.set(id, entry);
    if (pod !== undefined) this.pods.get(pod)!.ids.add(id);
    return true;
  }

  admitPodPair(pair: PodPair): boolean {
    if (this.options.routedWorkloads !== true) return false;
    return this.writePodPairsEntry(this.podPairs, podPairKey(pair.clientAddress, pair.serverAddress, pair.port), podPairValue(pair.expiresAt), pair);
  }

  deferServiceRoute(route: ServiceRoute): boolean {
    if (this.deferMark === 0) return false;
    // A service address is no pod's, so its key is never a pair's.
    return this.writePodPairsEntry(this.serviceRoutes, podPairKey(route.clientAddress, route.serviceAddress, route.port), podPairValue(route.expiresAt, true), route);
  }

  /** One entry of fast_pod_pairs, which pairs and routes share, written and kept in `table` (false: a full table, or the kernel refused it). */
  private writePodPairsEntry<T>(table: Map<string, T>, key: Buffer, value: Buffer, entry: T): boolean {
    const id = key.toString('latin1');
    if (!table.has(id) && this.podPairs.size + this.serviceRoutes.size >= MAP_CAPACITY.fast_pod_pairs) {
      this.refused++;
      return false;
    }
    if (!this.write('fast_pod_pairs', key, value)) return false;
    table.set(id, entry);
    return true;
  }

  /** From now on the rules judge a pod's SYN marked `mark` after the DNAT: its service routes defer it there. */
  deferServiceSyns(mark: number): void {
    this.deferMark = mark;
    this.writeConfig();
  }

  /**
   * Whether a uid's connect without an entry names itself at its SYN (fast_owners), as a cgroup
   * workload's always does: where a DNAT of this host may send it to a server the uid holds an entry
   * for, the rules after the DNAT find its owner so (synpass_translated_syn). Elsewhere it would
   * cost every such connect a map write for nothing.
   */
  nameUidOwnersAfterNat(on: boolean): void {
    this.nameUidOwners = on;
    this.writeConfig();
  }

  /** How the kernel names an entry's owner; a pod new to the table gets its number (null: fast_pods is full). */
  private kernelOwner(owner: SocketOwner): KernelOwner | null {
    if (owner.pod === undefined) return owner.workload > 0 ? { kind: OWNER_WORKLOAD, id: owner.workload } : { kind: OWNER_UID, id: owner.uid };
    const address = owner.pod;
    let pod = this.pods.get(address);
    if (pod === undefined) {
      if (this.pods.size >= MAP_CAPACITY.fast_pods) {
        this.refused++;
        return null;
      }
      pod = { number: this.nextPodNumber++, ids: new Set() };
      if (!this.write('fast_pods', addressKey(address), u32Value(pod.number))) return null;
      this.pods.set(address, pod);
    }
    return { kind: OWNER_POD, id: pod.number };
  }

  podTokensChanged(tokenSignatureAt: (address: string) => Uint8Array | undefined): void {
    const holds = (address: string, held: Uint8Array | undefined): boolean => {
      const signature = tokenSignatureAt(address);
      return signature !== undefined && held !== undefined && Buffer.compare(held, signature) === 0;
    };
    const stale: string[] = [];
    for (const [address, { ids }] of this.pods) {
      for (const id of ids) if (!holds(address, this.clients.get(id)?.tokenSignature)) stale.push(id);
    }
    this.dropClients(stale);
    const unpaired: string[] = [];
    for (const [id, pair] of this.podPairs) {
      if (!holds(pair.clientAddress, pair.clientTokenSignature) || !holds(pair.serverAddress, pair.serverTokenSignature)) unpaired.push(id);
    }
    this.dropPodPairs(unpaired);
    this.dropServiceRoutes([...this.serviceRoutes].filter(([, route]) => !holds(route.clientAddress, route.clientTokenSignature)).map(([id]) => id));
  }

  podUnvouched(address: string): void {
    this.unvouchedPods.add(address);
    this.dropClients([...(this.pods.get(address)?.ids ?? [])]);
  }

  /** A pod left with no entries gives its number up: fast_pods holds only pods that may connect fast. */
  private releasePod(address: string): void {
    if (!this.pods.delete(address)) return;
    this.native.mapDelete(this.map('fast_pods'), addressKey(address));
  }

  /** Forgets a client entry here (the kernel's is the caller's to delete). */
  private forgetClient(id: string): void {
    const pod = this.clients.get(id)?.owner.pod;
    this.clients.delete(id);
    if (pod === undefined) return;
    const ids = this.pods.get(pod)?.ids;
    ids?.delete(id);
    if (ids?.size === 0) this.releasePod(pod);
  }

  /**
   * Judges every entry again under `authorizer`, in slices of at most REJUDGE_SLICE_MS with the
   * event loop free between them: a table that fits in one slice (most) is judged before this
   * returns, a full one over the next turns of the loop (rejudged says when). A newer call starts
   * the walk again from the first entry. Entries admitted meanwhile were judged by the new policy
   * at admission; removed ones are skipped.
   */
  reauthorize(authorizer: Authorizer, localAt: LocalWorkloadAt): void {
    this.stopRejudging();
    let settle = (): void => undefined;
    const settled = new Promise<void>((resolve) => {
      settle = resolve;
    });
    const { servers, clients, podPairs } = this;
    this.walk = { authorizer, localAt, serverTable: servers, clientTable: clients, pairTable: podPairs, servers: servers.entries(), clients: clients.entries(), pairs: podPairs.entries(), started: performance.now(), slices: 0, settled, settle };
    try {
      this.rejudgeSlice();
    } catch (error) {
      this.stopRejudging();
      throw error;
    }
  }

  /** Whether a policy edit's walk over the tables is under way. */
  get rejudging(): boolean {
    return this.walk !== null;
  }

  /** Resolves once the last policy edit's walk over the tables is done (at once when none runs). */
  get rejudged(): Promise<void> {
    return this.walk?.settled ?? Promise.resolve();
  }

  private rejudgeSlice(): void {
    this.rejudgeTimer = null;
    const walk = this.walk;
    if (walk === null) return;
    walk.slices++;
    // Entries admitted into the new table were judged by the new policy at admission.
    if (walk.serverTable !== this.servers) walk.servers = [].values();
    if (walk.clientTable !== this.clients) walk.clients = [].values();
    if (walk.pairTable !== this.podPairs) walk.pairs = [].values();
    const deadline = performance.now() + REJUDGE_SLICE_MS;
    const turned: ServerRewrite[] = [];
    const denied: string[] = [];
    const unpaired: string[] = [];
    let done = false;
    while (!done && performance.now() < deadline) {
      for (let i = 0; i < REJUDGE_BETWEEN_CLOCKS && !done; i++) {
        const server = walk.servers.next();
        if (server.done !== true) {
          const [id, record] = server.value;
          const { entry } = record;
          // A pod at the address may have changed, or another taken it: the workload there now is judged.
          entry.local = walk.localAt(entry.localAddress, entry.port);
          const auth = walk.authorizer.ingress({ local: entry.local, peer: entry.peer, peerAddress: entry.peerAddress, port: entry.port });
          const allowed = auth.allowed && auth.wouldDrop === null;
          // Kept with allowed = 0 rather than deleted, so the kernel counts the drop as not-allowed.
          if (allowed !== record.allowed) turned.push({ id, record, value: serverValue(entry.fast.key, allowed, this.retiring(record), entry.expiresAt) });
          continue;
        }
        const client = walk.clients.next();
        if (client.done !== true) {
          const [id, entry] = client.value;
          const auth = walk.authorizer.egress({ local: entry.local, peer: entry.peer, peerAddress: entry.serverAddress, port: entry.port });
          // No longer allowed out: the next SYN takes the queue, where the agent decides.
          if (!auth.allowed || auth.wouldDrop !== null) denied.push(id);
          continue;
        }
        const pair = walk.pairs.next();
        if (pair.done === true) {
          done = true;
          continue;
        }
        // Judged as between the pods on the queue: the server pod's ingress, then the client pod's egress.
        const [id, { client: clientPod, server: serverPod, clientAddress, serverAddress, port }] = pair.value;
        const ingress = walk.authorizer.ingress({ local: serverPod.attributes, peer: clientPod, peerAddress: clientAddress, port });
        const egress = ingress.allowed && ingress.wouldDrop === null ? walk.authorizer.egress({ local: clientPod.attributes, peer: serverPod, peerAddress: serverAddress, port }) : null;
        if (egress === null || !egress.allowed || egress.wouldDrop !== null) unpaired.push(id);
      }
    }
    this.rewriteServers(turned, (record) => {
      record.allowed = !record.allowed;
    });
    this.dropClients(denied);
    this.dropPodPairs(unpaired);
    if (!done) {
      this.rejudgeTimer = setImmediate(() => {
        try {
          this.rejudgeSlice();
        } catch (error) {
          // A later turn of the loop has no caller to throw to: the walk ends, and status says why.
          this.lastRejudging = { milliseconds: Math.round(performance.now() - walk.started), slices: walk.slices, error: (error as Error).message };
          this.stopRejudging();
        }
      });
      return;
    }
    this.walk = null;
    this.lastRejudging = { milliseconds: Math.round(performance.now() - walk.started), slices: walk.slices };
    walk.settle();
  }

  private stopRejudging(): void {
    if (this.rejudgeTimer !== null) clearImmediate(this.rejudgeTimer);
    this.rejudgeTimer = null;
    const walk = this.walk;
    this.walk = null;
    walk?.settle();
  }

  cloak(closed: (port: number) => boolean): void {
    const next = new Uint8Array(PORT_COUNT);
    let count = 0;
    for (let port = 1; port < PORT_COUNT; port++) {
      if (!closed(port)) continue;
      next[port] = 1;
      count++;
    }
    if (Buffer.compare(next, this.closed) === 0) return;
    portKeys ??= new Uint8Array(Uint32Array.from({ length: PORT_COUNT }, (_, port) => port).buffer);
    this.native.mapWriteBatch(this.map('fast_cloak'), portKeys, 4, next, 1);
    this.closed = next;
    this.closedCount = count;
  }

  /**
   * What a restart can rebuild of the server table (kernel/saved-tables.ts): the entries resting
   * on this agent's current keys, or (`previous`) those resting on the keys before the last
   * rotation, which the agent keeps until they end. Entries of rotations before that rest on keys
   * it no longer holds.
   */
  serversToSave(keys: 'current' | 'previous' = 'current'): ServerToSave[] {
    const generation = keys === 'current' ? this.generation : this.generation - 1;
    const saved: ServerToSave[] = [];
    for (const record of this.servers.values()) {
      if (record.generation !== generation) continue;
      const { entry } = record;
      const { peerAddress, localAddress, port, credential, tokenSignature, peer, expiresAt } = entry;
      saved.push({ peerAddress, localAddress, port, credential: credential.compact, tokenSignature, peer, expiresAt });
    }
    return saved;
  }

  /**
   * What a restart can rebuild of the client table: every entry (a change of this agent's keys
   * empties it) but pods', whose numbers and tokens are this run's: a pod's first connect to each
   * server after a restart is a first contact.
   */
  clientsToSave(): ClientToSave[] {
    return [...this.clients.values()].filter((entry) => entry.owner.pod === undefined).map(({ serverAddress, port, owner, credential, tokenSignature, peer, local, expiresAt }) => ({ serverAddress, port, owner, credential: credential.compact, tokenSignature, peer, local, expiresAt }));
  }

  /** Ports whose SYNs without any proof the kernel drops. */
  get cloakedPorts(): number {
    return this.closedCount;
  }

  listenerAnswered(port: number, ready: boolean): void {
    if (ready) this.unreadyListeners.delete(port);
    else if (!this.unreadyListeners.has(port)) this.unreadyListeners.set(port, false);
  }

  /** Local ports whose listener keeps its known pairs on the queue (listenerAnswered), in order. */
  get listenersOnQueue(): number[] {
    return [...this.unreadyListeners.keys()].sort((a, b) => a - b);
  }

  /** The ports of listenersOnQueue not reported by an earlier call: each is reported once, until it signs and then stops again. */
  takeNewListenersOnQueue(): number[] {
    const fresh: number[] = [];
    for (const [port, reported] of this.unreadyListeners) {
      if (reported) continue;
      this.unreadyListeners.set(port, true);
      fresh.push(port);
    }
    return fresh.sort((a, b) => a - b);
  }

  forgetOwnWorkloads(): void {
    this.dropPodPairs([...this.podPairs.keys()]);
    this.dropServiceRoutes([...this.serviceRoutes.keys()]);
    const forgotten = this.clients;
    this.clients = new Map();
    this.retiredClients.clear();
    for (const address of [...this.pods.keys()]) this.releasePod(address);
    this.backlog.clients.push({ ids: forgotten.keys(), retire: null });
    this.backlog.left += forgotten.size;
    this.catchUpKernel();
  }

  retire(untilSeconds: number): void {
    this.generation++;
    // Flagged at their turn in the backlog: touching every record here took 52 ms of a full table.
    this.backlog.servers.push({ ids: this.servers.keys(), retire: { generation: this.generation, untilSeconds } });
    this.backlog.left += this.servers.size;
    this.forgetOwnWorkloads();
  }

  /** Whether `record` rests on previous keys, whether or not the backlog has reached it in the kernel. */
  private retiring(record: ServerRecord): boolean {
    return record.generation < this.generation;
  }

  forgetAll(): void {
    const forgotten = this.servers;
    this.servers = new Map();
    this.backlog.servers.push({ ids: forgotten.keys(), retire: null });
    this.backlog.left += forgotten.size;
    this.forgetOwnWorkloads();
  }

  /** About how many entries the kernel has yet to catch up with after a rotation or a flush (0 once it has). */
  get backlogSize(): number {
    return this.catchingUp ? Math.max(1, this.backlog.left) : 0;
  }

  private get catchingUp(): boolean {
    return this.backlog.servers.length + this.backlog.clients.length > 0;
  }

  /**
   * The backlog into the kernel, in slices of at most BACKLOG_SLICE_MS with the event loop free
   * between them: a small one (most) before this returns. Until an entry's turn the kernel judges
   * by what it held: a retiring entry's SYN-ACKs do not yet say so, a flushed one still admits.
   */
  private catchUpKernel(unbounded = false): void {
    if (this.backlogTimer !== null) clearImmediate(this.backlogTimer);
    this.backlogTimer = null;
    const deadline = unbounded ? Infinity : performance.now() + BACKLOG_SLICE_MS;
    while (this.catchingUp && performance.now() < deadline) this.catchUpBatch();
    if (!this.catchingUp) {
      this.backlog.left = 0;
      return;
    }
    this.backlogTimer = setImmediate(() => {
      try {
        this.catchUpKernel();
      } catch (error) {
        // A later turn of the loop has no caller to throw to: the rest is left to the entries'
        // own expiry in the kernel, and status says why.
        this.backlogError = (error as Error).message;
        this.dropBacklog();
      }
    });
  }

  private dropBacklog(): void {
    if (this.backlogTimer !== null) clearImmediate(this.backlogTimer);
    this.backlogTimer = null;
    this.backlog.servers.length = 0;
    this.backlog.clients.length = 0;
    this.backlog.left = 0;
  }

  private catchUpBatch(): void {
    const rewrites: ServerRewrite[] = [];
    const gone: string[] = [];
    const unheld: string[] = [];
    let room = BACKLOG_BATCH;
    for (; room > 0; room--) {
      const step = nextInBacklog(this.backlog.servers);
      if (step === undefined) break;
      const { id, retire } = step;
      const record = this.servers.get(id);
      if (record === undefined) {
        gone.push(id);
        continue;
      }
      if (retire !== null && record.generation < retire.generation) record.entry.expiresAt = Math.min(record.entry.expiresAt, retire.untilSeconds);
      rewrites.push({ id, record, value: serverValue(record.entry.fast.key, record.allowed, this.retiring(record), record.entry.expiresAt) });
    }
    for (; room > 0; room--) {
      const step = nextInBacklog(this.backlog.clients);
      if (step === undefined) break;
      // Held again since (a new first contact wrote it): the kernel has the new entry.
      if (!this.clients.has(step.id)) unheld.push(step.id);
    }
    // A refused rewrite is counted; the entry goes when its (earlier) expiry comes.
    this.rewriteServers(rewrites, () => undefined);
    this.deleteBatch('fast_servers', gone);
    this.deleteBatch('fast_clients', unheld);
    this.backlog.left -= BACKLOG_BATCH - room;
  }

  /**
   * The kernel dropped a client entry the server told it was retiring: so does this agent, unless
   * a newer entry (another fast id) took its place since. A lost event leaves the entry here until
   * it is replaced or expires; the kernel no longer uses it either way.
   */
  private forgetRetiredClient(serverAddress: string, port: number, owner: KernelOwner, fastId: number): void {
    const id = clientKey(serverAddress, port, owner).toString('latin1');
    const entry = this.clients.get(id);
    if (entry?.fast.fastId !== fastId) return;
    this.forgetClient(id);
    this.retiredClients.delete(id);
    this.retiredClients.set(id, entry);
    if (this.retiredClients.size > RETIRED_CLIENTS_KEPT) this.retiredClients.delete(this.retiredClients.keys().next().value!);
  }

  private dropClients(ids: readonly string[]): void {
    this.deleteBatch('fast_clients', ids);
    for (const id of ids) this.forgetClient(id);
  }

  private dropPodPairs(ids: readonly string[]): void {
    this.deleteBatch('fast_pod_pairs', ids);
    for (const id of ids) this.podPairs.delete(id);
  }

  private dropServiceRoutes(ids: readonly string[]): void {
    this.deleteBatch('fast_pod_pairs', ids);
    for (const id of ids) this.serviceRoutes.delete(id);
  }

  /**
   * Server entries rewritten in one system call: a policy edit or a key rotation may touch every
   * entry of a full table, and one call per entry (about 15 us inside a busy agent) would hold the
   * event loop for a second. `applied` runs for each entry the kernel took; a refused one is
   * counted and left as it was.
   */
  private rewriteServers(rewrites: readonly ServerRewrite[], applied: (record: ServerRecord) => void): void {
    if (rewrites.length === 0) return;
    const ids = rewrites.map((rewrite) => rewrite.id);
    let refused: number[];
    try {
      refused = this.native.mapWriteBatch(this.map('fast_servers'), batchKeys(ids, KEY_SIZE.fast_servers), KEY_SIZE.fast_servers, Buffer.concat(rewrites.map((rewrite) => rewrite.value)), rewrites[0]!.value.length);
    } catch (error) {
      // As write: a kernel error leaves these entries as they were (counted), and the agent runs on.
      if ((error as ErrnoError).errno === undefined) throw error;
      refused = ids.map((_, index) => index);
    }
    this.refused += refused.length;
    const skipped = new Set(refused);
    rewrites.forEach((rewrite, index) => {
      if (!skipped.has(index)) applied(rewrite.record);
    });
  }

  private deleteBatch(map: 'fast_servers' | 'fast_clients' | 'fast_pod_pairs', ids: readonly string[]): void {
    if (ids.length > 0) this.native.mapDeleteBatch(this.map(map), batchKeys(ids, KEY_SIZE[map]), KEY_SIZE[map]);
  }

  /**
   * Hands the kernel's verdict events (drops, at most one a second per source and cause, and the
   * sampled accepts) to `onEvent`, with the peer an accepted SYN proved (acceptedPeer), from the event loop.
   */
  onEvents(onEvent: (event: KernelEvent, peer: VerifiedIdentity | null) => void): void {
    this.events?.close();
    this.events = new this.native.KernelEvents(this.map('fast_events'), (records) => {
      for (const event of decodeEvents(records)) {
        if (event.owner !== null) this.forgetRetiredClient(event.source, event.sourcePort, event.owner, event.fastId);
        onEvent(event, this.acceptedPeer(event));
      }
    });
  }

  /** The peer an accepted SYN's event names: the workload its fast SYN proved, or on a node the client pod of a pair. */
  private acceptedPeer(event: KernelEvent): VerifiedIdentity | null {
    if (event.counter === 'synAccepted') return this.servers.get(serverKey(event.source, event.destination, event.fastId, event.destinationPort).toString('latin1'))?.entry.peer ?? null;
    if (event.counter === 'podSynAccepted') return this.podPairs.get(podPairKey(event.source, event.destination, event.destinationPort).toString('latin1'))?.client ?? null;
    return null;
  }

  /**
   * Once a second, where interfaces are followed: the tc program on every interface that appeared
   * since (a NIC plugged in, a link given an address). An interface that went away is forgotten, so it is
   * attached again if it comes back. Returns the interfaces attached now.
   */
  followInterfaces(): string[] {
    if (this.options.newInterfaces === null) return [];
    const present = new Set(this.options.newInterfaces());
    const { attached, skipped } = this.interfaces;
    for (let i = attached.length - 1; i >= 0; i--) if (!present.has(attached[i]!)) attached.splice(i, 1);
    for (let i = skipped.length - 1; i >= 0; i--) if (!present.has(skipped[i]!.name)) skipped.splice(i, 1);
    const added: string[] = [];
    for (const name of present) {
      if (attached.includes(name) || skipped.some((entry) => entry.name === name)) continue;
      const refused = this.native.fastPathAttachInterface(this.options.pinDir, this.loaded.programFd, this.loaded.egressFd, name);
      if (refused === null) {
        attached.push(name);
        added.push(name);
      } else {
        skipped.push({ name, reason: refused });
      }
    }
    // A new pod's link, most likely: pods whose SYNs met no program may meet it now.
    if (added.length > 0) this.unvouchedPods.clear();
    return added;
  }

  /** Once a second: this agent still vouches for the programs, the clock offset, the workload cgroups, and entries whose tokens or credentials expired. */
  tick(): void {
    const nowSeconds = this.now() / 1000;
    this.vouchedUntil = nowSeconds + VOUCH_SECONDS;
    this.followWorkloadCgroups();
    this.writeConfig();
    // Entries resting on one credential (retiring ones after a rotation: every entry) end together.
    const ended = endedBy(this.servers, nowSeconds, (record) => record.entry.expiresAt);
    this.deleteBatch('fast_servers', ended);
    for (const id of ended) this.servers.delete(id);
    this.dropClients(endedBy(this.clients, nowSeconds, (entry) => entry.expiresAt));
    for (const id of endedBy(this.retiredClients, nowSeconds, (entry) => entry.expiresAt)) this.retiredClients.delete(id);
    this.dropPodPairs(endedBy(this.podPairs, nowSeconds, (pair) => pair.expiresAt));
    this.dropServiceRoutes(endedBy(this.serviceRoutes, nowSeconds, (route) => route.expiresAt));
  }

  counters(): Record<FastCounter, number> {
    const totals = this.native.counterTotals(this.map('fast_counters'), FAST_COUNTERS.length);
    return Object.fromEntries(FAST_COUNTERS.map((name, index) => [name, totals[index] ?? 0])) as Record<FastCounter, number>;
  }

  verdicts(): VerdictCount[] {
    return kernelVerdicts(this.counters());
  }

  /**
   * The peer of a connection the kernel judged: on the server, the workload its fast SYN proved
   * (while the kernel's table of judged connections and this agent still hold it); on the
   * client, the server the fast entry was learned from.
   */
  peerOf(localAddress: string, localPort: number, remoteAddress: string, remotePort: number): FastPeer | null {
    const value = Buffer.alloc(FLOW_VALUE_BYTES);
    const fastId = this.native.mapLookup(this.map('fast_flows'), flowKey(localAddress, localPort, remoteAddress, remotePort), value) ? provenPeerFastId(value) : null;
    if (fastId !== null) {
      const record = this.servers.get(serverKey(remoteAddress, localAddress, fastId, localPort).toString('latin1'));
      if (record !== undefined) return { identity: record.entry.peer, fastId };
    }
    for (const table of [this.clients, this.retiredClients]) {
      for (const entry of table.values()) {
        if (entry.serverAddress === remoteAddress && entry.port === remotePort) return { identity: entry.peer, fastId: entry.fast.fastId };
      }
    }
    return null;
  }

  /**
   * Fill of the maps this agent writes, and of the SYNs in flight (a small table: entries go at
   * establishment). The replay and flow maps are kernel LRU tables, full by design under load;
   * walking them would cost a system call per entry on every scrape.
   */
  tables(): Record<string, TableSize> {
    return {
      'kernel-servers': { entries: this.servers.size, capacity: MAP_CAPACITY.fast_servers },
      'kernel-clients': { entries: this.clients.size, capacity: MAP_CAPACITY.fast_clients },
      'kernel-retired-clients': { entries: this.retiredClients.size, capacity: RETIRED_CLIENTS_KEPT },
      'kernel-connecting': { entries: this.native.mapCount(this.map('fast_conns'), KEY_SIZE.fast_conns), capacity: MAP_CAPACITY.fast_conns },
      // On a node only: its pods that hold client entries, and pairs of its pods.
      ...(this.podMark !== 0 ? { 'kernel-pods': { entries: this.pods.size, capacity: MAP_CAPACITY.fast_pods } } : {}),
      // Pairs of pods and service routes share one kernel table.
      ...(this.options.routedWorkloads === true ? { 'kernel-pod-pairs': { entries: this.podPairs.size + this.serviceRoutes.size, capacity: MAP_CAPACITY.fast_pod_pairs } } : {}),
    };
  }

  /** Detaches and unpins; the maps' file descriptors go with them. */
  close(): { tcDetached: number; linkDetached: boolean } {
    const result = KernelFastPath.detach(this.options.pinDir);
    this.release();
    return result;
  }

  /**
   * Leaves the programs attached and pinned, judging on their own for `seconds` more (the next
   * start replaces them, `agent cleanup` removes them); after that they judge nothing. Failing
   * closed, they drop first-contact SYNs to closed ports meanwhile, which only an agent can check
   * (failing open, they pass them on, as the rules would with no agent listening).
   */
  keep(seconds: number, failClosed: boolean): void {
    // The programs judge alone from here: by the tables as they are, not as they were.
    this.catchUpKernel(true);
    this.vouchedUntil = this.now() / 1000 + seconds;
    this.agentAway = failClosed;
    // The notrack rules go with this agent: the mark would serve nothing and cost the tc
    // program a table lookup on every packet, for as long as the programs stay attached.
    this.untrackedMark = 0;
    // So do the rules that judge a pod's SYN after the DNAT: the programs no longer defer one.
    this.deferMark = 0;
    this.writeConfig();
    this.release();
  }

  private release(): void {
    this.stopRejudging();
    this.dropBacklog();
    this.events?.close();
    this.events = null;
    for (const fd of Object.values(this.loaded.maps)) this.native.closeFd(fd);
    this.native.closeFd(this.loaded.programFd);
    this.native.closeFd(this.loaded.egressFd);
    this.native.closeFd(this.loaded.sockopsFd);
    this.servers.clear();
    this.clients.clear();
    this.podPairs.clear();
    this.serviceRoutes.clear();
  }
}

/** The next id of the first walk not yet done, with that walk's rotation, dropping walks that are done: undefined once all are. */
function nextInBacklog(walks: BacklogWalk[]): { id: string; retire: BacklogWalk['retire'] } | undefined {
  while (walks.length > 0) {
    const walk = walks[0]!;
    const step = walk.ids.next();
    if (step.done !== true) return { id: step.value, retire: walk.retire };
    walks.shift();
  }
  return undefined;
}

/** The ids of a table's entries whose end (Unix seconds) has come. */
function endedBy<T>(table: ReadonlyMap<string, T>, nowSeconds: number, end: (entry: T) => number): string[] {
  const ended: string[] = [];
  for (const [id, entry] of table) if (end(entry) <= nowSeconds) ended.push(id);
  return ended;
}

/** Map keys held as latin1 strings (one character a byte), back to back. */
function batchKeys(ids: readonly string[], keySize: number): Buffer {
  const keys = Buffer.allocUnsafe(ids.length * keySize);
  ids.forEach((id, index) => keys.write(id, index * keySize, keySize, 'latin1'));
  return keys;
}
