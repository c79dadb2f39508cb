// A Kubernetes-style node in network namespaces: a "node" namespace routes for "pod" namespaces
// over veth pairs (no bridge, as Calico does: a /32 and a /128 route per pod link, the node's
// link-local gateway the same on every link), dual stack. Hosts on networks of their own can sit
// behind the node. In a kernel run the node and every other host get a cgroup, the pods' below
// the node's, as on a node. Shared by the kubernetes-node e2e test and the pods benchmark; what
// runs in the lab (API stand-in, agents, policy) is the caller's.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { initDomain, issueAgent } from '../../agent/src/identity/issuance.ts';
import { cgroup2Mount } from '../../agent/src/runtime/kernel-fast-path.ts';
import { NetnsProcess, sleep } from './lab.ts';

export type Pod = 'a' | 'b' | 'c';

/** Each pod's IPv4 address on the node. */
export const POD_ADDRESS: Record<Pod, string> = { a: '10.215.1.1', b: '10.215.1.2', c: '10.215.1.3' };
/** Each pod's IPv6 address (dual stack). */
export const POD_ADDRESS6: Record<Pod, string> = { a: 'fd15::1', b: 'fd15::2', c: 'fd15::3' };

/** The trust domain of the node's agent, `node-1`. */
export const NODE_DOMAIN = 'cluster.synpass';

/** Makes the domain (in `directory`/domain) and the node agent's credential and keys (in `directory`/agent). */
export async function issueNodeAgent(directory: string): Promise<void> {
  await initDomain(NODE_DOMAIN, join(directory, 'domain'));
  await issueAgent({ domainDirectory: join(directory, 'domain'), trustDomain: NODE_DOMAIN, agentId: 'node-1', namespaces: ['k8s', 'host'], ttlSeconds: 3600, outputDirectory: join(directory, 'agent') });
}

/**
 * A host behind the node with an agent of its own, in the node's domain: issues its credential and
 * keys (in `directory`/remote, after issueNodeAgent) and returns its configuration as far as every
 * lab's is the same (identity mode, subject `spiffe://cluster.synpass/remote`).
 */
export async function issueRemoteAgent(directory: string): Promise<Record<string, unknown>> {
  await issueAgent({ domainDirectory: join(directory, 'domain'), trustDomain: NODE_DOMAIN, agentId: 'remote', namespaces: ['app'], ttlSeconds: 3600, outputDirectory: join(directory, 'remote') });
  return {
    mode: 'identity',
    identity: {
      subject: `spiffe://${NODE_DOMAIN}/remote`,
      credential: join(directory, 'remote/credential.jwt'),
      signingKey: join(directory, 'remote/sign.key.pem'),
      keyAgreementKey: join(directory, 'remote/kex.key.pem'),
      trustBundles: join(directory, 'domain'),
    },
  };
}

/** The node agent's configuration as far as every node lab's is the same: its identity (issueNodeAgent's files) and the API server at `apiPort`. */
export function nodeAgentConfig(directory: string, apiPort: number): Record<string, unknown> {
  return {
    mode: 'identity',
    identity: {
      subject: `spiffe://${NODE_DOMAIN}/node/node-1`,
      credential: join(directory, 'agent/credential.jwt'),
      signingKey: join(directory, 'agent/sign.key.pem'),
      keyAgreementKey: join(directory, 'agent/kex.key.pem'),
      trustBundles: join(directory, 'domain'),
    },
    kubernetes: { nodeName: 'node-1', apiServer: `http://127.0.0.1:${apiPort}` },
  };
}

const live = new Set<NodeLab>();
process.on('exit', () => {
  for (const lab of live) lab.removeNamespaces();
});

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: 'pipe' });
}

export class NodeLab {
  /** The node's network namespace. */
  readonly node: string;
  readonly pods: Record<Pod, string>;
  /** Every namespace made, to remove; and the hosts behind the node, whose cgroups and pins go too. */
  private readonly namespaces: string[] = [];
  private readonly behind: string[] = [];
  private readonly processes: NetnsProcess[] = [];
  private readonly cgroupBase: string;

  /** `prefix`: up to 8 of [a-z0-9], unique among running labs. With `kernel`, processes run in cgroups. */
  constructor(
    readonly prefix: string,
    readonly kernel: boolean,
  ) {
    this.node = `${prefix}-node`;
    this.pods = { a: `${prefix}-pa`, b: `${prefix}-pb`, c: `${prefix}-pc` };
    const mount = kernel ? cgroup2Mount(readFileSync('/proc/self/mountinfo', 'utf8')) : null;
    if (kernel && mount === null) throw new Error('no cgroup v2 mount: a node lab with the kernel fast path needs one');
    this.cgroupBase = mount === null ? '' : `${mount}/synpass-k8s-${prefix}`;
  }

  /** The cgroup of a lab namespace's processes: the node's, a pod's (below the node's), another host's. */
  cgroup(ns: string): string {
    if (ns === this.node) return `${this.cgroupBase}/node`;
    const pod = (Object.keys(this.pods) as Pod[]).find((name) => this.pods[name] === ns);
    return pod !== undefined ? `${this.cgroupBase}/node/pod-${pod}` : `${this.cgroupBase}/${ns}`;
  }

  /** Where the agent in namespace `ns` pins its fast path. */
  pinDir(ns: string): string {
    return `/sys/fs/bpf/synpass-k8s-${ns}`;
  }

  /** The agent flags that run the agent in namespace `ns` on the kernel fast path in its cgroup; none in a queue run. */
  kernelFlags(ns: string): string[] {
    return this.kernel ? ['--kernel-fast-path', 'on', '--fast-path-pin-dir', this.pinDir(ns), '--fast-path-cgroup', this.cgroup(ns)] : [];
  }

  /** Creates the node and its three pods (each pod's link on the node is `cali<pod>`). */
  create(): void {
    live.add(this);
    if (this.kernel) {
      for (const ns of Object.values(this.pods)) mkdirSync(this.cgroup(ns), { recursive: true });
      execFileSync('sh', ['-c', 'mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf']);
    }
    const node = this.node;
    this.addNamespace(node);
    // The pods' gateway address; the node answers ARP for it on every pod link.
    ip('-n', node, 'addr', 'add', '169.254.1.1/32', 'dev', 'lo');
    execFileSync('ip', ['netns', 'exec', node, 'sysctl', '-qw', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1']);
    for (const [name, ns] of Object.entries(this.pods) as [Pod, string][]) {
      this.addNamespace(ns);
      ip('-n', ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', `cali${name}`, 'netns', node);
      ip('-n', ns, 'addr', 'add', `${POD_ADDRESS[name]}/32`, 'dev', 'eth0');
      ip('-n', ns, 'link', 'set', 'eth0', 'up');
      ip('-n', ns, 'route', 'add', '169.254.1.1', 'dev', 'eth0', 'scope', 'link');
      ip('-n', ns, 'route', 'add', 'default', 'via', '169.254.1.1', 'dev', 'eth0');
      ip('-n', node, 'link', 'set', `cali${name}`, 'up');
      execFileSync('ip', ['netns', 'exec', node, 'sysctl', '-qw', `net.ipv4.conf.cali${name}.proxy_arp=1`]);
      ip('-n', node, 'route', 'add', `${POD_ADDRESS[name]}/32`, 'dev', `cali${name}`);
      ip('-n', node, '-6', 'addr', 'add', 'fe80::1/64', 'dev', `cali${name}`, 'nodad');
      ip('-n', ns, '-6', 'addr', 'add', `${POD_ADDRESS6[name]}/128`, 'dev', 'eth0', 'nodad');
      ip('-n', ns, '-6', 'route', 'add', 'default', 'via', 'fe80::1', 'dev', 'eth0');
      ip('-n', node, '-6', 'route', 'add', `${POD_ADDRESS6[name]}/128`, 'dev', `cali${name}`);
      // Connection benchmarks would otherwise stall on TIME_WAIT ports.
      execFileSync('ip', ['netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv4.tcp_tw_reuse=1', 'net.ipv4.ip_local_port_range=1024 65000']);
    }
  }

  /** A host on a network of its own (`address`/24) behind the node's interface `link`, the node (`gateway`) its router. */
  addHostBehindNode(ns: string, link: string, address: string, gateway: string): void {
    if (this.kernel) mkdirSync(this.cgroup(ns), { recursive: true });
    this.behind.push(ns);
    this.addNamespace(ns);
    ip('-n', ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', link, 'netns', this.node);
    ip('-n', ns, 'addr', 'add', `${address}/24`, 'dev', 'eth0');
    ip('-n', ns, 'link', 'set', 'eth0', 'up');
    ip('-n', ns, 'route', 'add', 'default', 'via', gateway);
    ip('-n', this.node, 'addr', 'add', `${gateway}/24`, 'dev', link);
    ip('-n', this.node, 'link', 'set', link, 'up');
  }

  /** Runs `command` in namespace `ns`; in a kernel run inside `cgroup` (none given: in none of the lab's; usually `cgroup(ns)`). */
  spawn(ns: string, command: string[], cgroup?: string, stdin = false): NetnsProcess {
    const child = new NetnsProcess(ns, command, { stdin, ...(this.kernel && cgroup !== undefined ? { cgroup } : {}) });
    this.processes.push(child);
    return child;
  }

  /** Stops every process, removes the namespaces and, in a kernel run, the agents' pins and the cgroups. */
  async destroy(): Promise<void> {
    await Promise.all(this.processes.map((child) => child.stop('SIGKILL', 2_000)));
    this.removeNamespaces();
    live.delete(this);
    if (!this.kernel) return;
    // A killed agent leaves its pins (the cgroup link and maps): removing them detaches its programs.
    for (const ns of [this.node, ...this.behind]) rmSync(this.pinDir(ns), { recursive: true, force: true });
    const cgroups = [...Object.values(this.pods), this.node, ...this.behind].map((ns) => this.cgroup(ns));
    cgroups.push(this.cgroupBase);
    for (const cgroup of cgroups) {
      // A killed process leaves its cgroup a moment later.
      for (let attempt = 0; attempt < 20; attempt++) {
        try {
          rmdirSync(cgroup);
          break;
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code === 'ENOENT') break;
          await sleep(100);
        }
      }
    }
  }

  /** Deletes the lab's namespaces (safe to repeat). */
  removeNamespaces(): void {
    for (const ns of this.namespaces.splice(0)) {
      try {
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
      } catch {
        // already gone
      }
    }
  }

  private addNamespace(ns: string): void {
    ip('netns', 'add', ns);
    this.namespaces.push(ns);
    ip('-n', ns, 'link', 'set', 'lo', 'up');
  }
}
