// The agent's iptables rules over its lifetime: installed once the queues are bound, checked
// every few seconds (reinstalled when someone flushed them, a firewall reload say), and what the
// check reads reported: SYNs the kernel let in without a verdict, and rules ahead of our jumps.
import { inspectRules, installRules, removeAllRules, type Backend, type InstalledRules, type RuleInspection } from '../datapath/iptables.ts';
import type { RuleOptions } from '../datapath/rules.ts';
import type { Logger } from '../telemetry/log.ts';

/** The iptables calls the watchdog makes; tests give it fakes. */
export interface RuleOperations {
  install(options: RuleOptions, preferred: Backend): Promise<InstalledRules>;
  inspect(installed: InstalledRules, options: RuleOptions): Promise<RuleInspection>;
  removeAll(): Promise<number>;
}

const IPTABLES: RuleOperations = { install: installRules, inspect: inspectRules, removeAll: removeAllRules };

export class RulesWatchdog {
  installed: InstalledRules | null = null;
  /** Every rule of the IPv4 ruleset was in place at the last check. */
  present = false;
  /** SYNs the kernel let in without a verdict (fail-open), over the agent's lifetime. */
  unjudgedSyns = 0;
  /** Other rules ahead of the hook jumps at the last check: they can keep SYNs from us. */
  rulesAhead = 0;
  private unjudgedCounterSeen = 0;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(
    private readonly options: RuleOptions,
    private readonly preferred: Backend,
    private readonly log: Logger,
    private readonly operations: RuleOperations = IPTABLES,
  ) {}

  async install(): Promise<InstalledRules> {
    this.installed = await this.operations.install(this.options, this.preferred);
    this.present = true;
    this.log.info({ backend: this.installed.backend, families: this.installed.families, targets: this.options.targetNetworks }, 'rules installed');
    return this.installed;
  }

  watch(intervalMs: number): void {
    this.timer = setInterval(() => {
      void this.check();
    }, intervalMs);
    this.timer.unref();
  }

  /** Reinstalls missing rules, or counts what the audit rule and the hook chains show. */
  async check(): Promise<void> {
    const installed = this.installed;
    if (installed === null || this.stopped) return;
    const inspection = await this.operations.inspect(installed, this.options).catch(() => null);
    this.present = inspection?.present ?? false;
    if (inspection?.present === true) {
      this.countUnjudged(inspection.unjudgedSyns);
      this.noteRulesAhead(inspection.rulesAhead);
      return;
    }
    this.log.error({ backend: installed.backend }, 'synpass rules are missing; reinstalling');
    try {
      this.installed = await this.operations.install(this.options, installed.backend);
      this.present = true;
      this.unjudgedCounterSeen = 0;
      this.log.info('rules reinstalled');
    } catch (error) {
      this.log.error({ err: error }, 'rules could not be reinstalled');
    }
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

  /** `kernelCount` is the audit rule's counter, which restarts at 0 when the rules are reinstalled. */
  private countUnjudged(kernelCount: number): void {
    const added = kernelCount >= this.unjudgedCounterSeen ? kernelCount - this.unjudgedCounterSeen : kernelCount;
    this.unjudgedCounterSeen = kernelCount;
    if (added === 0) return;
    this.unjudgedSyns += added;
    this.log.warn({ syns: added, total: this.unjudgedSyns, failOpen: this.options.failOpen }, 'SYNs reached the host without a verdict (queue full or no agent listening)');
  }
}
