// Test-side handle on scripts/lab: namespaces, processes inside them, agents and captures.
// Every lab is torn down by its test's after() hook and, as a last resort, on process exit.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cgroup2Mount } from '../../agent/src/runtime/kernel-fast-path.ts';
import { fetchStatus } from '../../agent/src/telemetry/status-client.ts';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const LAB = `${ROOT}scripts/lab`;
const BUILT_CLI = `${ROOT}dist/agent/src/cli/main.js`;
const PEER = `${ROOT}scripts/lib/peer.ts`;
const CAPTURE = `${ROOT}scripts/lib/capture-probe.ts`;

export type Host = 'web' | 'api' | 'outsider';

const liveLabs = new Set<string>();
process.on('exit', () => {
  for (const prefix of liveLabs) execFileSync(LAB, ['down', prefix], { stdio: 'ignore' });
});

/**
 * The synpass command as it ships (tsc output in dist/), so tests and benchmarks exercise and
 * time what users run rather than the tsx loader's transform of the sources. Throws, naming the
 * command that fixes it, when a source file is newer than its build.
 */
export function synpassCommand(): string[] {
  const sources = `${ROOT}agent/src`;
  const stale = (directory: string): string | null => {
    for (const entry of readdirSync(directory, { withFileTypes: true })) {
      const path = join(directory, entry.name);
      if (entry.isDirectory()) {
        const found = stale(path);
        if (found !== null) return found;
      } else if (entry.name.endsWith('.ts')) {
        const built = `${ROOT}dist/${relative(ROOT, path).replace(/\.ts$/, '.js')}`;
        const builtTime = statSync(built, { throwIfNoEntry: false })?.mtimeMs ?? -1;
        if (builtTime < statSync(path).mtimeMs) return relative(ROOT, path);
      }
    }
    return null;
  };
  const outdated = stale(sources);
  if (outdated !== null) throw new Error(`dist/ is older than ${outdated}: run \`npm run build:ts\` first`);
  return [process.execPath, BUILT_CLI];
}

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** A command line that runs `command` in a cgroup v2 directory and a network namespace (nsenter: ip netns exec would hide bpffs). */
function inCgroup(cgroup: string, namespace: string, command: string[]): string[] {
  return ['sh', '-c', 'echo $$ > "$1/cgroup.procs" && ns=$2 && shift 2 && exec nsenter "--net=/var/run/netns/$ns" -- "$@"', 'sh', cgroup, namespace, ...command];
}

/** A process running inside a lab namespace whose stdout is JSON lines. */
export class NetnsProcess {
  readonly lines: Record<string, unknown>[] = [];
  readonly stderr: string[] = [];
  readonly exited: Promise<number | null>;
  private readonly child: ChildProcess;
  private waiters: (() => void)[] = [];

  /** With `cgroup`, the process runs in that cgroup v2 directory, entered with nsenter (ip netns exec would hide bpffs). */
  constructor(namespace: string, command: string[], options: { stdin?: boolean; env?: Record<string, string>; cgroup?: string } = {}) {
    const launcher =
      options.cgroup === undefined
        ? ['ip', 'netns', 'exec', namespace, ...command]
        : inCgroup(options.cgroup, namespace, command);
    this.child = spawn(launcher[0]!, launcher.slice(1), {
      cwd: ROOT,
      env: { ...process.env, ...options.env },
      stdio: [options.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
    });
    let partial = '';
    this.child.stdout!.setEncoding('utf8');
    this.child.stdout!.on('data', (chunk: string) => {
      partial += chunk;
      const complete = partial.split('\n');
      partial = complete.pop() ?? '';
      for (const line of complete) {
        if (line.trim() === '') continue;
        try {
          this.lines.push(JSON.parse(line) as Record<string, unknown>);
        } catch {
          this.lines.push({ text: line });
        }
      }
      this.notify();
    });
    this.child.stderr!.setEncoding('utf8');
    this.child.stderr!.on('data', (chunk: string) => this.stderr.push(chunk));
    // 'close', not 'exit': a process's last lines may still be in the pipe when it exits.
    this.exited = new Promise((resolve) => {
      this.child.on('close', (code) => {
        this.notify();
        resolve(code);
      });
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  private notify(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }

  /** Resolves with the first line matching `predicate`; rejects after `timeoutMs` or on exit. */
  async waitFor(predicate: (line: Record<string, unknown>) => boolean, timeoutMs = 15_000): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.lines.find(predicate);
      if (found) return found;
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        throw new Error(`process exited (${this.child.exitCode ?? this.child.signalCode}) before the expected line: ${this.stderr.join('')}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting; lines: ${JSON.stringify(this.lines.slice(-5))} ${this.stderr.join('')}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 250));
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  write(text: string): void {
    this.child.stdin?.write(text);
  }

  signal(signal: NodeJS.Signals): void {
    this.child.kill(signal);
  }

  closeStdin(): void {
    this.child.stdin?.end();
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 10_000): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    const code = await this.exited;
    clearTimeout(timer);
    return code;
  }
}

export interface AgentHandle {
  process: NetnsProcess;
  socket: string;
  status(): Promise<AgentStatus>;
}

export interface AgentStatus {
  state: 'starting' | 'waiting-for-queue' | 'running' | 'stopping';
  queue: Record<string, number>;
  /** The kernel side of the agent's queues (null before they are bound). */
  kernelQueue: { dropped: number; userDropped: number; waiting: number } | null;
  verdicts: { direction: string; action: string; reason: string; count: number }[];
  rules: { backend: string; families: number[] } | null;
  unjudgedSyns: number;
  tables: Record<string, { entries: number; capacity: number }>;
  /** Agent JavaScript time per judged packet: the agent's own share of a user-space trip. */
  judging: { packets: number; microsecondsPerPacket: number; byStage?: { direction: string; stage: string; packets: number; microsecondsPerPacket: number }[] };
  /** The first-contact rehearsal after start (absent in builds before it). */
  rehearsal?: { state: 'off' | 'running' | 'done' | 'failed'; handshakes?: number; milliseconds?: number; error?: string };
  /** Resets sent to a local server whose answer the agent refused (absent in builds before them). */
  serverResets?: { sent: number; failed: number };
}

const HOST_INDEX: Record<Host, number> = { web: 1, api: 2, outsider: 3 };

/** The cgroup v2 mount of this machine (scripts/lab puts each host's cgroup under it). */
function labCgroupRoot(): string {
  const mount = cgroup2Mount(readFileSync('/proc/self/mountinfo', 'utf8'));
  if (mount === null) throw new Error('no cgroup v2 mount: the kernel fast path lab needs one');
  return mount;
}

export interface LabOptions {
  /**
   * Run the kernel fast path: every process of a host runs in that host's cgroup (nsenter, so
   * bpffs stays visible) and each agent attaches there, pinning under its own directory.
   * Unset: as SYNPASS_TEST_KERNEL_FAST_PATH says (`1`: on), so the whole suite runs in both modes.
   */
  kernel?: boolean;
}

/** The lab's mode when its caller does not choose one (scripts/test runs the suite both ways). */
export function kernelByDefault(): boolean {
  return process.env.SYNPASS_TEST_KERNEL_FAST_PATH === '1';
}

export class Lab {
  private readonly processes: NetnsProcess[] = [];

  private constructor(
    readonly prefix: string,
    readonly net: number,
    readonly options: LabOptions,
  ) {}

  /** Creates the lab; `prefix` is 1-8 of [a-z0-9], `net` 1..250 and unique among running labs. */
  static up(prefix: string, net: number, options: LabOptions = {}): Lab {
    liveLabs.add(prefix);
    execFileSync(LAB, ['up', prefix, String(net)], { stdio: 'pipe' });
    return new Lab(prefix, net, { kernel: options.kernel ?? kernelByDefault() });
  }

  /** The host's cgroup v2 directory (made by scripts/lab). */
  cgroup(host: Host): string {
    return `${labCgroupRoot()}/synpass-lab-${this.prefix}/${host}`;
  }

  /**
   * A workload's cgroup inside the host's, made on first use (scripts/lab down removes it): its
   * directory, and its path under the host's cgroup (where the agent attaches), as
   * `workloads[].cgroups` names it.
   */
  workloadCgroup(host: Host, name: string): { directory: string; path: string } {
    const directory = `${this.cgroup(host)}/${name}`;
    mkdirSync(directory, { recursive: true });
    return { directory, path: `/${name}` };
  }

  /** Where the host's agent pins its fast path (removed by scripts/lab down if it is left). */
  pinDir(host: Host): string {
    return `/sys/fs/bpf/synpass-lab-${this.prefix}-${host}`;
  }

  /**
   * The agent flags that let `host`'s agent run the kernel fast path in its own cgroup (`auto`:
   * a pass-through agent runs without it; a later `--kernel-fast-path` flag wins).
   */
  kernelFlags(host: Host): string[] {
    return ['--kernel-fast-path', 'auto', '--fast-path-pin-dir', this.pinDir(host), '--fast-path-cgroup', this.cgroup(host)];
  }

  namespace(host: Host | 'sw'): string {
    return `${this.prefix}-${host}`;
  }

  address(host: Host, family: 4 | 6 = 4): string {
    const index = HOST_INDEX[host];
    return family === 4 ? `10.213.${this.net}.${index}` : `fd53:5350:0:${this.net}::${index}`;
  }

  /** A second IPv4 address for `host` on the same link; the lab does not configure it, the caller adds it. */
  secondAddress(host: Host): string {
    return `10.213.${this.net}.${100 + HOST_INDEX[host]}`;
  }

  get networks(): string[] {
    return [`10.213.${this.net}.0/24`, `fd53:5350:0:${this.net}::/64`];
  }

  /**
   * With `workload` (a kernel lab), the process runs in that workload cgroup of the host
   * (workloadCgroup); with `outsideCgroup`, in none of the host's: its programs never see its
   * sockets, and the listener sweep leaves them alone.
   */
  spawn(host: Host | 'sw', command: string[], options: { stdin?: boolean; env?: Record<string, string>; workload?: string; outsideCgroup?: boolean } = {}): NetnsProcess {
    const inCgroup = this.options.kernel === true && host !== 'sw' && options.outsideCgroup !== true;
    if (options.workload !== undefined && !inCgroup) throw new Error('workload cgroups need a kernel lab host');
    // Only a kernel lab reads the cgroup mount: other labs run where there is none.
    const cgroup = !inCgroup ? {} : { cgroup: options.workload === undefined ? this.cgroup(host) : this.workloadCgroup(host, options.workload).directory };
    const child = new NetnsProcess(this.namespace(host), command, { ...options, ...cgroup });
    this.processes.push(child);
    return child;
  }

  /** Runs the peer script in `host` (see scripts/lib/peer.ts), as `uid` and in the workload cgroup `workload` when given. */
  peer(host: Host, args: string[], options: { stdin?: boolean; uid?: number; workload?: string; outsideCgroup?: boolean } = {}): NetnsProcess {
    const asUser = options.uid === undefined ? [] : ['setpriv', `--reuid=${options.uid}`, `--regid=${options.uid}`, '--clear-groups'];
    return this.spawn(host, [...asUser, process.execPath, '--import', 'tsx', PEER, ...args], options);
  }

  /**
   * Runs a one-shot peer and returns its first JSON line. One that does not answer in time is
   * killed, its socket with it: left alone, it retransmitted its SYN for seconds, and a
   * retransmission a policy admitted again made a first contact in the middle of a later test.
   */
  async peerOnce(host: Host, args: string[], timeoutMs = 15_000, uid?: number, workload?: string): Promise<Record<string, unknown>> {
    const child = this.peer(host, args, { ...(uid === undefined ? {} : { uid }), ...(workload === undefined ? {} : { workload }) });
    try {
      const line = await child.waitFor(() => true, timeoutMs);
      await child.exited;
      return line;
    } catch (error) {
      await child.stop('SIGKILL', 2_000);
      throw error;
    }
  }

  synpass(host: Host, args: string[]): string {
    return execFileSync('ip', ['netns', 'exec', this.namespace(host), ...synpassCommand(), ...args], {
      cwd: ROOT,
      encoding: 'utf8',
    });
  }

  /** Configures a host: `ip netns exec`, so /sys shows the namespace's own interfaces. */
  exec(host: Host | 'sw', command: string[]): string {
    return execFileSync('ip', ['netns', 'exec', this.namespace(host), ...command], { encoding: 'utf8' });
  }

  /**
   * Runs a command as one of the host's workloads and returns its output: in a kernel lab it
   * runs in the host's cgroup, like `spawn`, so its connections are the kernel fast path's to
   * judge (under `exec` they would stay on the queue).
   */
  execWorkload(host: Host, command: string[]): string {
    if (this.options.kernel !== true) return this.exec(host, command);
    const [shell, ...args] = inCgroup(this.cgroup(host), this.namespace(host), command);
    return execFileSync(shell!, args, { encoding: 'utf8' });
  }

  /** Agents of one lab share the filesystem: each gets its own sockets, removed with the lab. */
  private socketPath(host: Host, kind: 'status' | 'whois'): string {
    return `${tmpdir()}/synpass-test-${this.prefix}-${host}${kind === 'whois' ? '-whois' : ''}.sock`;
  }

  /** Where the host's agent keeps its kernel tables and previous key across a restart (datapath.fastPathStateFile): a file per host, where the default would be one for the whole lab. */
  savedTablesFile(host: Host): string {
    return `${tmpdir()}/synpass-test-${this.prefix}-${host}-kernel-tables.json`;
  }

  whoisSocket(host: Host): string {
    return this.socketPath(host, 'whois');
  }

  /**
   * Starts an agent; resolves once it is running (or, with `untilRunning` false, once its status
   * socket answers). `command` runs another build of synpass (scripts/benchmarks/compare-builds.ts).
   */
  async startAgent(
    host: Host,
    extraArgs: string[] = [],
    env: Record<string, string> = {},
    untilRunning = true,
    command: string[] = synpassCommand(),
  ): Promise<AgentHandle> {
    const socket = this.socketPath(host, 'status');
    const whois = this.whoisSocket(host);
    const targets = this.networks.flatMap((cidr) => ['--target', cidr]);
    // Outside a kernel lab the fast path is off outright: whether `auto` could find bpffs under
    // `ip netns exec` depends on the machine (it remounts /sys, which usually hides it). Another
    // build (compare-builds) may predate the flags `--kernel-fast-path` and `--fast-path-state-file`:
    // it gets neither, and keeps its kernel tables where its configuration says, if anywhere.
    // This build keeps its state in the host's own file in either mode (a queue-only agent keeps
    // its previous key there after a rotation).
    // The CLI comes last: a command may run it through a wrapper (setpriv with fewer capabilities).
    const thisBuild = command[command.length - 1] === BUILT_CLI;
    const kernel = [...(this.options.kernel !== true ? (thisBuild ? ['--kernel-fast-path', 'off'] : []) : this.kernelFlags(host)), ...(thisBuild ? ['--fast-path-state-file', this.savedTablesFile(host)] : [])];
    const child = this.spawn(host, [...command, 'agent', 'run', '--status-socket', socket, '--whois-socket', whois, ...targets, ...kernel, ...extraArgs], {
      env,
    });
    return untilAgentAnswers(child, socket, host, untilRunning);
  }

  /** Starts a libpcap capture on the switch bridge; resolves once it is capturing. */
  async capture(filter: string, count = 1000, ms = 15_000): Promise<NetnsProcess> {
    const child = this.spawn('sw', [process.execPath, '--import', 'tsx', CAPTURE, 'br0', filter, String(count), String(ms)], {
      stdin: true,
    });
    await child.waitFor((line) => line.ready === true);
    return child;
  }

  /** Every iptables backend's rules of both families in `host`; `counters`: with each rule's packet and byte counts (`-c`). */
  iptablesSave(host: Host, counters = false): string {
    return ['iptables-nft-save', 'iptables-legacy-save', 'ip6tables-nft-save', 'ip6tables-legacy-save']
      .map((tool) => {
        try {
          return this.exec(host, counters ? [tool, '-c'] : [tool]);
        } catch {
          return '';
        }
      })
      .join('\n');
  }

  async down(): Promise<void> {
    await Promise.all(this.processes.map((child) => child.stop('SIGKILL', 2_000)));
    execFileSync(LAB, ['down', this.prefix], { stdio: 'pipe' });
    liveLabs.delete(this.prefix);
    // A killed agent leaves its socket files.
    for (const host of ['web', 'api', 'outsider'] as const) {
      for (const kind of ['status', 'whois'] as const) rmSync(this.socketPath(host, kind), { force: true });
      rmSync(this.savedTablesFile(host), { force: true });
    }
  }
}

/**
 * Resolves once the agent `child` (named `name` in errors) answers on its status socket and, with
 * `untilRunning`, says it is running; throws on a fatal log line or after 15 s.
 */
export async function untilAgentAnswers(child: NetnsProcess, socket: string, name: string, untilRunning = true): Promise<AgentHandle> {
  // Asked over the status socket, not read from logs: log lines may be filtered by level.
  const deadline = Date.now() + 15_000;
  for (;;) {
    const fatal = child.lines.find((line) => line.level === 'fatal');
    if (fatal) throw new Error(`agent in ${name} failed: ${JSON.stringify(fatal)}`);
    const status = await readStatus(socket).catch(() => null);
    if (status !== null && (!untilRunning || status.state === 'running')) break;
    if (Date.now() > deadline) throw new Error(`agent in ${name} did not become ready: ${child.stderr.join('')}`);
    await child.waitFor(() => false, 100).catch((error: unknown) => {
      if (!String(error).includes('timed out')) throw error;
    });
  }
  return { process: child, socket, status: () => readStatus(socket) };
}

export async function readStatus(socketPath: string): Promise<AgentStatus> {
  return (await fetchStatus(socketPath)) as AgentStatus;
}

/**
 * An agent's status read when no packet waits in its queue: its received count then holds every
 * packet the kernel queued before the reading. A packet still unread would be counted late, in a
 * reading taken after what it belonged to.
 */
export async function settledStatus(read: () => Promise<AgentStatus>): Promise<AgentStatus> {
  let status: AgentStatus | null = null;
  await waitUntil(
    'no packet waits in the queue',
    async () => {
      status = await read();
      return (status.kernelQueue?.waiting ?? 0) === 0;
    },
    5_000,
  );
  return status!;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Asks `check` every 250 ms until it holds; throws naming `what` after `timeoutMs`. */
export async function waitUntil(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await sleep(250);
  }
}

/** Until each agent's first-contact rehearsal after start is over: startup work, not the datapath's, so measurements begin after it. */
export async function untilRehearsed(agents: readonly AgentHandle[]): Promise<void> {
  for (const agent of agents) await waitUntil('first-contact rehearsal ended', async () => (await agent.status()).rehearsal?.state !== 'running', 60_000);
}
