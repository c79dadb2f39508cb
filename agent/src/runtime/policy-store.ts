// The agent's current policy set: validated, compiled and swapped whole. A set with any problem
// is refused with a log line naming file:line:column, and the last good set keeps enforcing.
// Connections already released never reach the agent, so a swap cannot disturb them.
import { watch, type FSWatcher } from 'node:fs';
import { formatProblem, loadPolicyDirectory } from '../policy/load.ts';
import { PolicySet } from '../policy/policy-set.ts';
import { policyRevision } from '../policy/revision.ts';
import type { Logger } from '../telemetry/log.ts';

export class PolicyStore {
  reloadsOk = 0;
  reloadsFailed = 0;
  private set: PolicySet;
  private watcher: FSWatcher | null = null;
  private pending: NodeJS.Timeout | null = null;

  private constructor(
    readonly directory: string,
    private readonly log: Logger,
    initial: PolicySet,
  ) {
    this.set = initial;
  }

  /** Loads the initial set; throws if it has problems (an agent must not start without policy). */
  static open(directory: string, log: Logger): PolicyStore {
    const set = PolicyStore.compile(directory, log);
    if (set === null) throw new Error(`policy directory ${directory} has problems; see the log`);
    log.info({ revision: set.revision, policies: set.policies.length, rules: set.ruleCount }, 'policy loaded');
    return new PolicyStore(directory, log, set);
  }

  private static compile(directory: string, log: Logger): PolicySet | null {
    let loaded;
    try {
      loaded = loadPolicyDirectory(directory);
    } catch (error) {
      log.error({ err: error, directory }, 'policy directory unreadable');
      return null;
    }
    if (loaded.problems.length > 0) {
      log.error({ problems: loaded.problems.map(formatProblem), directory }, 'policy set refused');
      return null;
    }
    return new PolicySet(loaded.files, policyRevision(directory, loaded.contentHash));
  }

  get current(): PolicySet {
    return this.set;
  }

  /** Validates and swaps; returns whether the new set is now enforcing. */
  reload(): boolean {
    const next = PolicyStore.compile(this.directory, this.log);
    if (next === null) {
      this.reloadsFailed += 1;
      this.log.warn({ revision: this.set.revision }, 'keeping the last good policy set');
      return false;
    }
    const previous = this.set.revision;
    this.set = next;
    this.reloadsOk += 1;
    this.log.info({ previous, revision: next.revision, policies: next.policies.length, rules: next.ruleCount }, 'policy reloaded');
    return true;
  }

  /** Reloads shortly after files change (editors write in several steps). */
  watch(debounceMs = 200): void {
    this.watcher = watch(this.directory, { recursive: true }, () => {
      if (this.pending) clearTimeout(this.pending);
      this.pending = setTimeout(() => {
        this.pending = null;
        this.reload();
      }, debounceMs);
    });
    this.watcher.on('error', (error) => {
      this.log.error({ err: error }, 'policy watch failed; reload with SIGHUP');
    });
  }

  close(): void {
    this.watcher?.close();
    if (this.pending) clearTimeout(this.pending);
  }
}
