// The agent's iptables rules over its lifetime: installed once the queues are bound, checked
// every few seconds (reinstalled when someone flushed them, a firewall reload say), and what the
// check reads reported: SYNs the kernel let in without a verdict, and rules ahead of our jumps;
// and, for whoever waits for them, NAT rules that appear after the start.
import { inspectRules, installDeferRules, installNotrackRules, installRules, natInUse, removeAllRules, type Backend, type InstalledRules, type NotrackBy, type RuleInspection } from '../datapath/iptables.ts';
import type { ConnectionMarks } from '../datapath/marks.ts';
import type { DeferPrograms, RuleOptions } from '../datapath/rules.ts';
import type { Logger } from '../telemetry/log.ts';

/** The iptables calls the watchdog makes; tests give it fakes. */
export interface RuleOperations {
  install(options: RuleOptions, preferred: Backend): Promise<InstalledRules>;
  inspect(installed: InstalledRules, options: RuleOptions): Promise<RuleInspection>;
  installNotrack(installed: InstalledRules, marks: ConnectionMarks): Promise<NotrackBy>;
  installDefer(installed: InstalledRules, options: RuleOptions, programs: DeferPrograms): Promise<void>;
  natInUse(installed: InstalledRules): Promise<boolean>;
  removeAll(): Promise<number>;
}

const IPTABLES: RuleOperations = { install: installRules, inspect: inspectRules, installNotrack: installNotrackRules, installDefer: installDeferRules, natInUse, removeAll: removeAllRules };

/** A rule's kernel packet counter summed over the agent's lifetime: it restarts at 0 with a reinstall. */
class LifetimeCounter {
  total = 0;
  private seen = 0;

  /** Takes the counter's current kernel value; returns what it added since the last reading. */
  read(kernelCount: number): number {
    const added = kernelCount >= this.seen ? kernelCount - this.seen : kernelCount;
    this.seen = kernelCount;
    this.total += added;
    return added;
  }

  reinstalled(): void {
    this.seen = 0;
  }
}

export class RulesWatchdog {
  installed: InstalledRules | null = null;
  /** Every rule of the IPv4 ruleset was in place at the last check. */
  present = false;
  /** Other rules ahead of the hook jumps at the last check: they can keep SYNs from us. */
  rulesAhead = 0;
  private readonly unjudged = new LifetimeCounter();
  private readonly sourceLimited = new LifetimeCounter();
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  /** The kernel fast path's connections skip conntrack: the notrack rules go in with every install. */
  private notrack = false;
  /** Runs once, at the first check that finds NAT rules (whenNatAppears). */
  private natFound: (() => void) | null = null;

  constructor(
    private options: RuleOptions,
    private readonly preferred: Backend,
    private readonly log: Logger,
    private readonly operations: RuleOperations = IPTABLES,
  ) {}

  async install(): Promise<InstalledRules> {
    this.installed = await this.operations.install(this.options, this.preferred);
    this.present = true;
    // What the host routes is judged only for a node's pods: said here, since it leaves no verdict.
    const routed = this.options.routedWorkloads ? 'judged (the node\'s pods)' : 'passes (not this host\'s)';
    this.log.info({ backend: this.installed.backend, families: this.installed.families, targets: this.options.targetNetworks, routed }, 'rules installed');
    return this.installed;
  }

  /** Adds the rules that leave the kernel fast path's connections out of conntrack; says which kind (null: no rules installed). */
  async skipConntrack(): Promise<NotrackBy | null> {
    if (this.installed === null) return null;
    const by = await this.operations.installNotrack(this.installed, this.options.marks);
    this.notrack = true;
    return by;
  }

  /**
   * Adds the rules that judge a node's pods' SYNs after the DNAT, with the kernel fast path's
   * programs pinned at `programs` (rules.ts, buildDeferRuleset); every reinstall adds them too.
   * False when no rules are installed.
   */
  async deferServiceSyns(programs: DeferPrograms): Promise<boolean> {
    const installed = this.installed;
    if (installed === null) return false;
    try {
      await this.operations.installDefer(installed, this.options, programs);
    } catch (error) {
      // A family may have taken them before another refused: the ruleset goes back to what it was.
      await this.reinstall(installed.backend);
      throw error;
    }
    this.options = { ...this.options, deferPrograms: programs };
    return true;
  }

  /**
   * Whether this network namespace translates addresses now (iptables.ts, natInUse). A look that
   * fails counts as yes: what depends on it (conntrack kept) is then right either way.
   */
  async translating(): Promise<boolean> {
    if (this.installed === null) return false;
    return this.operations.natInUse(this.installed).catch(() => true);
  }

  /** `found` runs once, at the first rule check that finds NAT rules; until then each check looks. */
  whenNatAppears(found: () => void): void {
    this.natFound = found;
  }

  watch(intervalMs: number): void {
    this.timer = setInterval(() => {
      void this.check();
    }, intervalMs);
    this.timer.unref();
  }

  /** Reinstalls missing rules, or counts what the audit rule and the hook chains show; then looks for NAT rules, if asked to. */
  async check(): Promise<void> {
    const installed = this.installed;
    if (installed === null || this.stopped) return;
    const inspection = await this.operations.inspect(installed, this.options).catch(() => null);
    this.present = inspection?.present ?? false;
    if (inspection?.present === true) {
      this.countUnjudged(inspection.unjudgedSyns);
      this.countSourceLimited(inspection.sourceLimitedPackets);
      this.noteRulesAhead(inspection.rulesAhead);
    } else {
      await this.repair(installed);
    }
    if (this.natFound !== null && (await this.translating()) && !this.stopped) {
      const found = this.natFound;
      this.natFound = null;
      found();
    }
  }

  /** Reinstalls the rules someone removed (a firewall reload, say). */
  private async repair(installed: InstalledRules): Promise<void> {
    this.log.error({ backend: installed.backend }, 'synpass rules are missing; reinstalling');
    try {
      await this.reinstall(installed.backend);
      this.present = true;
      this.unjudged.reinstalled();
      this.sourceLimited.reinstalled();
      this.log.info('rules reinstalled');
    } catch (error) {
      this.log.error({ err: error }, 'rules could not be reinstalled');
    }
  }

  /** Everything installed so far, again (an install removes what is there first). */
  private async reinstall(backend: Backend): Promise<void> {
    this.installed = await this.operations.install(this.options, backend);
    if (this.notrack) await this.operations.installNotrack(this.installed, this.options.marks);
  }

  /** Stops checking and removes the rules (when they were ever installed). */
  async remove(): Promise<void> {
    this.stopped = true;
    if (this.timer !== null) clearInterval(this.timer);
    // Stopped while waiting for a queue: the rules in place belong to whoever holds it.
    if (this.installed === null) return;
    try {
      await this.operations.removeAll();
      this.log.info('rules removed');
    } catch (error) {
      this.log.error({ err: error }, 'rule removal failed; run `synpass agent cleanup`');
    }
  }

  /**
   * Reported, not fought: moving our jumps back to the top every check would race whichever tool
   * put its rule there (a CNI that prepends its own chains does) and reopen the rules each time.
   */
  private noteRulesAhead(count: number): void {
    if (count > this.rulesAhead) {
      this.log.warn({ rules: count }, 'rules ahead of the synpass jumps in mangle PREROUTING/POSTROUTING: a packet they accept or drop is never judged');
    } else if (count === 0 && this.rulesAhead > 0) {
      this.log.info('the synpass jumps are first in mangle PREROUTING/POSTROUTING again');
    }
    this.rulesAhead = count;
  }

  /** SYNs the kernel let in without a verdict (fail-open), over the agent's lifetime. */
  get unjudgedSyns(): number {
    return this.unjudged.total;
  }

  /** Packets the kernel dropped above their source's rate, over the agent's lifetime. */
  get sourceLimitedPackets(): number {
    return this.sourceLimited.total;
  }

  private countUnjudged(kernelCount: number): void {
    const added = this.unjudged.read(kernelCount);
    if (added === 0) return;
    this.log.warn({ syns: added, total: this.unjudged.total, failOpen: this.options.failOpen }, 'SYNs reached the host without a verdict (queue full or no agent listening)');
  }

  /** One line per rule check at most, however many SYNs a flood sent. */
  private countSourceLimited(kernelCount: number): void {
    const added = this.sourceLimited.read(kernelCount);
    if (added === 0) return;
    this.log.warn(
      { event: 'drops', reason: 'source-rate-limited', count: added, total: this.sourceLimited.total, queueRatePerSource: this.options.queueRatePerSource },
      'packets dropped in the kernel above their source\'s rate',
    );
  }
}
