// The agent's iptables rules over its lifetime: installed once the queues are bound, checked
// when the kernel says the ruleset changed and every few seconds (reinstalled when someone
// flushed them, a firewall reload say), and what the check reads reported: SYNs the kernel let in
// without a verdict, and rules ahead of our jumps; and, for whoever waits for them, NAT rules
// that appear after the start.
import { inspectRules, installDeferRules, installNotrackRules, installRules, natInUse, removeAllRules, type Backend, type InstalledRules, type NotrackBy, type RuleInspection } from '../datapath/iptables.ts';
import type { ConnectionMarks } from '../datapath/marks.ts';
import type { DeferPrograms, RuleOptions } from '../datapath/rules.ts';
import { watchRulesetChanges, type RulesetWatch } from '../datapath/ruleset-events.ts';
import type { Logger } from '../telemetry/log.ts';

/** The iptables calls the watchdog makes; tests give it fakes. */
export interface RuleOperations {
  install(options: RuleOptions, preferred: Backend): Promise<InstalledRules>;
  inspect(installed: InstalledRules, options: RuleOptions): Promise<RuleInspection>;
  installNotrack(installed: InstalledRules, marks: ConnectionMarks): Promise<NotrackBy>;
  installDefer(installed: InstalledRules, options: RuleOptions, programs: DeferPrograms): Promise<void>;
  natInUse(installed: InstalledRules): Promise<boolean>;
  removeAll(): Promise<number>;
  /** Calls `changed` when the ruleset changes; throws when the kernel will not tell. */
  watchChanges(changed: () => void): RulesetWatch;
}

const IPTABLES: RuleOperations = { install: installRules, inspect: inspectRules, installNotrack: installNotrackRules, installDefer: installDeferRules, natInUse, removeAll: removeAllRules, watchChanges: watchRulesetChanges };

/**
 * The shortest time from one check's start to a check a change asks for. A tool that rewrites
 * its rules all the time (kube-proxy, every second or so) costs at most one check per gap, while
 * a flush after a quiet spell is checked at once.
 */
const CHANGE_CHECK_GAP_MS = 250;
/** Repairs counted for the back-off: those of the last minute. */
const REPAIR_MEMORY_MS = 60_000;

/** How the rules are watched (status `ruleChecks`). */
export interface RuleCheckStatus {
  intervalSeconds: number;
  /** Checked also when the kernel says the ruleset changed (nftables notifications). */
  onChange: boolean;
  /** Why not, when the subscription failed. */
  onChangeError: string | null;
  /** Bursts of change notifications received. */
  changes: number;
  checks: number;
  /** Rules found removed and put back. */
  reinstalls: number;
}

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
  /** Every rule of the ruleset, in each family, was in place at the last check. */
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
  private changes: RulesetWatch | null = null;
  private readonly checkStatus: RuleCheckStatus = { intervalSeconds: 0, onChange: false, onChangeError: null, changes: 0, checks: 0, reinstalls: 0 };
  /** The check running now; another asked for meanwhile runs after it. */
  private checking: Promise<void> | null = null;
  private checkAgain = false;
  private changeTimer: NodeJS.Timeout | null = null;
  private lastCheckStartedMs = Number.NEGATIVE_INFINITY;
  private intervalMs = Number.POSITIVE_INFINITY;
  /** When the last repairs began (performance.now()), at most one minute's worth. */
  private readonly recentRepairs: number[] = [];

  constructor(
    private options: RuleOptions,
    private readonly preferred: Backend,
    private readonly log: Logger,
    private readonly operations: RuleOperations = IPTABLES,
    private readonly changeCheckGapMs = CHANGE_CHECK_GAP_MS,
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

  /** Checks every `intervalMs`, and soon after each change the kernel reports (when it reports them). */
  watch(intervalMs: number): void {
    this.checkStatus.intervalSeconds = intervalMs / 1000;
    this.intervalMs = intervalMs;
    this.timer = setInterval(() => {
      if (this.checking === null) this.runCheck();
    }, intervalMs);
    this.timer.unref();
    try {
      this.changes = this.operations.watchChanges(() => {
        this.checkStatus.changes += 1;
        this.changed();
      });
      this.checkStatus.onChange = true;
    } catch (error) {
      // The legacy backend's changes never notify anyway; the interval alone finds them then.
      this.checkStatus.onChangeError = error instanceof Error ? error.message : String(error);
      this.log.warn({ err: error, ruleCheckSeconds: intervalMs / 1000 }, 'no ruleset change notifications: rules removed by someone else are found at the next rule check only');
    }
  }

  get checkState(): RuleCheckStatus {
    return { ...this.checkStatus };
  }

  /** A change: a check as soon as the gap since the last one's start allows (changes meanwhile join it). */
  private changed(): void {
    if (this.stopped || this.changeTimer !== null) return;
    const wait = Math.max(0, this.lastCheckStartedMs + this.changeGapMs() - performance.now());
    this.changeTimer = setTimeout(() => {
      this.changeTimer = null;
      this.runCheck();
    }, wait);
  }

  /**
   * The gap, doubled for each repair of the last minute after the first: a tool that reverts the
   * ruleset whenever it changes (a controller of its own mangle table) would otherwise trade
   * reinstalls with the agent at every notification. At most the interval: no worse than polling.
   */
  private changeGapMs(): number {
    const repairs = this.repairsInLastMinute();
    return repairs <= 1 ? this.changeCheckGapMs : Math.min(this.changeCheckGapMs * 2 ** (repairs - 1), this.intervalMs);
  }

  private repairsInLastMinute(): number {
    const now = performance.now();
    while (this.recentRepairs.length > 0 && now - this.recentRepairs[0]! > REPAIR_MEMORY_MS) this.recentRepairs.shift();
    return this.recentRepairs.length;
  }

  /** One check at a time: asked for while one runs, another follows it (what it read may predate the change). */
  private runCheck(): void {
    if (this.checking !== null) {
      this.checkAgain = true;
      return;
    }
    this.lastCheckStartedMs = performance.now();
    this.checking = this.check()
      .catch((error: unknown) => {
        this.log.error({ err: error }, 'rule check failed');
      })
      .finally(() => {
        this.checking = null;
        if (!this.checkAgain) return;
        this.checkAgain = false;
        this.changed();
      });
  }

  /** Reinstalls missing rules, or counts what the audit rule and the hook chains show; then looks for NAT rules, if asked to. */
  async check(): Promise<void> {
    const installed = this.installed;
    if (installed === null || this.stopped) return;
    this.checkStatus.checks += 1;
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
    this.recentRepairs.push(performance.now());
    // The back-off never needs more than the last few.
    if (this.recentRepairs.length > 16) this.recentRepairs.shift();
    const repairs = this.repairsInLastMinute();
    if (repairs >= 2) {
      this.log.warn({ repairsInLastMinute: repairs, checkGapMs: this.changeGapMs() }, 'synpass rules removed again soon after a reinstall: another tool may be reverting them; checks after a change back off');
    }
    try {
      await this.reinstall(installed.backend);
      this.present = true;
      this.checkStatus.reinstalls += 1;
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
    if (this.changeTimer !== null) clearTimeout(this.changeTimer);
    this.changes?.close();
    this.changes = null;
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
