// Whether the kernel fast path runs, and why not when it does not: `datapath.kernelFastPath`
// against what this host allows (bpffs, cgroup v2, the compiled programs, the kernel's own
// verdict on loading them). `auto` falls back to the queue and says why; `on` refuses to start.
import { existsSync, readFileSync, statfsSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { dirname } from 'node:path';
import { SynpassError } from '../errors.ts';
import { KernelFastPath, KernelPathError, type WorkloadCgroup } from '../kernel/fast-path.ts';
import { fastPathObjectPath } from '../native/addon.ts';
import type { ConnectionMarks } from '../datapath/marks.ts';
import { sourceBurst } from '../datapath/rules.ts';
import type { AgentConfig } from './config.ts';

const BPF_FS_MAGIC = 0xcafe4a11;
const CGROUP2_SUPER_MAGIC = 0x63677270;

export class FastPathUnavailableError extends SynpassError<'unavailable'> {
  override readonly name = 'FastPathUnavailableError';
}

export interface FastPathChoice {
  path: KernelFastPath | null;
  /** Why it runs or why not, for the start log line, status and readiness detail. */
  reason: string;
  cgroup: string | null;
}

/** The first cgroup2 mount of this mount namespace (mountinfo: fields, " - ", type). */
export function cgroup2Mount(mountinfo: string): string | null {
  for (const line of mountinfo.split('\n')) {
    const [fields, tail] = line.split(' - ');
    if (tail?.startsWith('cgroup2 ')) return fields!.split(' ')[4] ?? null;
  }
  return null;
}

/** Every interface of this network namespace with an address, loopback left out. */
export function interfacesWithAddresses(): string[] {
  return Object.entries(networkInterfaces())
    .filter(([, addresses]) => addresses?.some((address) => !address.internal))
    .map(([name]) => name);
}

/** The interface names of /proc/net/dev text (two header lines, then `name: counters`), loopback left out. */
export function procNetDevInterfaces(text: string): string[] {
  return text
    .split('\n')
    .slice(2)
    .map((line) => line.split(':')[0]!.trim())
    .filter((name) => name !== '' && name !== 'lo');
}

/**
 * Every interface of this network namespace, with an address or not: a pod's link often has none,
 * and a pod's fast SYN is vouched for where it enters the node. /proc/net/dev lists the reading
 * process's namespace's (/sys/class/net, that of the namespace sysfs was mounted in).
 */
export function allInterfaces(): string[] {
  return procNetDevInterfaces(readFileSync('/proc/net/dev', 'utf8'));
}

function filesystemIs(path: string, magic: number): boolean {
  try {
    return statfsSync(path).type === magic;
  } catch {
    return false;
  }
}

/** What stops the fast path before the kernel is asked, or null. */
function precondition(config: Pick<AgentConfig, 'mode' | 'datapath'>, cgroup: string | null): string | null {
  if (config.mode !== 'identity') return 'pass-through mode proves no identities';
  if (!existsSync(fastPathObjectPath())) return `the kernel programs are not built (${fastPathObjectPath()}): npm run build:native`;
  const bpffs = dirname(config.datapath.fastPathPinDir);
  if (!filesystemIs(bpffs, BPF_FS_MAGIC)) return `no bpffs at ${bpffs} (mount -t bpf bpf ${bpffs}; under \`ip netns exec\` it is hidden: use nsenter --net)`;
  if (cgroup === null) return 'no cgroup v2 mount (datapath.fastPathCgroup)';
  if (!filesystemIs(cgroup, CGROUP2_SUPER_MAGIC)) return `${cgroup} is not a cgroup v2 directory`;
  return null;
}

/**
 * The cgroup directories of the workloads named by cgroup (`workloads[].cgroups`, paths under the
 * cgroup the programs attach to: by default the cgroup v2 mount, where systemd's paths start),
 * with each workload's number (its position, from 1).
 */
export function workloadCgroups(workloads: AgentConfig['workloads'], attachedTo: string): WorkloadCgroup[] {
  const base = attachedTo.replace(/\/+$/, '');
  return workloads.flatMap((workload, index) => workload.cgroups.map((path) => ({ workload: index + 1, directory: `${base}${path}` })));
}

/**
 * Fills the loaded path's maps (`prepare`), then attaches its programs: null when it runs, else
 * why not. Nothing of the path is left when it does not run.
 */
function attachPrepared(path: KernelFastPath, prepare: (path: KernelFastPath) => void, interfaces: readonly string[]): string | null {
  try {
    prepare(path);
  } catch (error) {
    path.close();
    throw error;
  }
  // attachPrograms lets go of everything before it throws.
  path.attachPrograms();
  if (path.interfaces.attached.length > 0) return null;
  path.close();
  return `no interface to attach to (${interfaces.join(', ') || 'none with an address'})`;
}

/**
 * `acceptSample`: share of the kernel's accepts reported to the flow log (0 when it writes none).
 * `prepare` fills the loaded programs' maps before they are attached; when the path does not run
 * after all, the caller undoes what it did.
 */
export function chooseKernelFastPath(
  config: Pick<AgentConfig, 'mode' | 'datapath' | 'replayWindowSeconds' | 'excluded' | 'workloads' | 'kubernetes'>,
  marks: ConnectionMarks,
  acceptSample = 0,
  prepare: (path: KernelFastPath) => void = () => undefined,
): FastPathChoice {
  const datapath = config.datapath;
  if (datapath.kernelFastPath === 'off') return { path: null, reason: 'off (datapath.kernelFastPath)', cgroup: null };
  const cgroup = datapath.fastPathCgroup ?? cgroup2Mount(readFileSync('/proc/self/mountinfo', 'utf8'));
  let reason = precondition(config, cgroup);
  let path: KernelFastPath | null = null;
  if (reason === null) {
    // A node's pods' links take the program too, addressed or not.
    const present = config.kubernetes !== null ? allInterfaces : interfacesWithAddresses;
    const interfaces = datapath.fastPathInterfaces.length > 0 ? datapath.fastPathInterfaces : present();
    try {
      path = KernelFastPath.load({
        pinDir: datapath.fastPathPinDir,
        cgroup: cgroup!,
        interfaces,
        newInterfaces: datapath.fastPathInterfaces.length > 0 ? null : present,
        excluded: config.excluded,
        windowSeconds: config.replayWindowSeconds,
        acceptMark: marks.pass | marks.release,
        clientMark: marks.pass,
        acceptSample,
        sourceRate: datapath.queueRatePerSource,
        sourceBurst: sourceBurst(datapath.queueRatePerSource, datapath.queueMaxLength),
        budgetMark: marks.budgeted,
        workloadCgroups: workloadCgroups(config.workloads, cgroup!),
        routedWorkloads: config.kubernetes !== null,
        // A pod's fast SYN, vouched for where it enters the node, passes both hooks' rules (rules.ts).
        podMark: config.kubernetes !== null ? marks.pass | marks.judged : 0,
        // What the rules' mark chain leaves on a proven SYN or SYN-ACK, so they need not walk it (rules.ts).
        judgedMark: marks.judged,
      });
      reason = attachPrepared(path, prepare, interfaces);
    } catch (error) {
      if (!(error instanceof KernelPathError)) throw error;
      reason = `the kernel refused: ${error.message}`;
    }
    if (reason !== null) path = null;
  }
  if (path !== null) return { path, reason: `running (${datapath.kernelFastPath})`, cgroup };
  if (datapath.kernelFastPath === 'on') throw new FastPathUnavailableError('unavailable', `datapath.kernelFastPath is on, but ${reason!}`);
  return { path: null, reason: reason!, cgroup };
}
