// The agent's current policy set: validated, compiled and swapped whole. A set with any problem
// is refused with a log line naming file:line:column, and the last good set keeps enforcing.
// Connections already released never reach the agent, so a swap cannot disturb them.
import { watch, type FSWatcher } from 'node:fs';
import { SynpassError } from '../errors.ts';
import { formatProblem, loadPolicyDirectory, PolicyDirectoryError } from '../policy/load.ts';
import { PolicySet } from '../policy/policy-set.ts';
import { policyRevision } from '../policy/revision.ts';
import type { Logger } from '../telemetry/log.ts';

export class PolicyStoreError extends SynpassError<'refused'> {
  override readonly name = 'PolicyStoreError';
}

export class PolicyStore {
  reloadsOk = 0;
  reloadsFailed = 0;
  private set: PolicySet;
  private watcher: FSWatcher | null = null;
  private pending: NodeJS.Timeout | null = null;
  /** Hears every swap, after the new set enforces (the kernel fast path judges its entries again). */
  onSwap: (() => void) | null = null;

  private constructor(
    readonly directory: string,
    private readonly log: Logger,
    initial: PolicySet,
  ) {
    this.set = initial;
  }

  /** Loads the initial set; throws if it has problems (an agent must not start without policy). */
  static open(directory: string, log: Logger): PolicyStore {
    const compiled = PolicyStore.compile(directory);
    if ('problems' in compiled) {
      const [first, ...rest] = compiled.problems;
      const more = rest.length === 0 ? '' : ` (and ${rest.length} more; \`synpass policy validate ${directory}\` lists them)`;
      throw new PolicyStoreError('refused', `policy.directory: ${first ?? directory}${more}`, { directory });
    }
    const set = compiled.set;
    log.info({ revision: set.revision, policies: set.policies.length, rules: set.ruleCount }, 'policy loaded');
    return new PolicyStore(directory, log, set);
  }

  /** The compiled set, or every problem as one line (an unreadable directory is one problem). */
  private static compile(directory: string): { set: PolicySet } | { problems: string[] } {
    let loaded;
    try {
      loaded = loadPolicyDirectory(directory);
    } catch (error) {
      if (!(error instanceof PolicyDirectoryError)) throw error;
      return { problems: [error.message] };
    }
    if (loaded.problems.length > 0) return { problems: loaded.problems.map(formatProblem) };
    return { set: new PolicySet(loaded.files, policyRevision(directory, loaded.contentHash)) };
  }

  get current(): PolicySet {
    return this.set;
  }

  /** Validates and swaps; returns whether the new set is now enforcing. */
  reload(): boolean {
    const compiled = PolicyStore.compile(this.directory);
    if ('problems' in compiled) {
      this.log.error({ problems: compiled.problems, directory: this.directory }, 'policy set refused');
      this.reloadsFailed += 1;
      this.log.warn({ revision: this.set.revision }, 'keeping the last good policy set');
      return false;
    }
    const next = compiled.set;
    const previous = this.set.revision;
    this.set = next;
    this.reloadsOk += 1;
    this.log.info({ previous, revision: next.revision, policies: next.policies.length, rules: next.ruleCount }, 'policy reloaded');
    this.onSwap?.();
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
