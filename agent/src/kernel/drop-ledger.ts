// Makes the flow log's count of kernel drops add up. The kernel reports a drop at most once a
// second per (source, cause) and folds that source's later drops into its next report
// (fast_path.bpf.c, drop()): the tail of a burst waits in the kernel until the source drops again,
// maybe never, and a full ring buffer loses reports. Each second the agent writes, per cause,
// what the kernel had counted SETTLE_LAG seconds before and no report covered yet (as source
// "*"), and deducts that from the reports that arrive later. The lag leaves a source that keeps
// dropping time to report its own (the kernel reports it again once a second). Pure
// bookkeeping: every drop is written once, as a line, folded into a source's summary, or in the
// "*" summary.
import { FAST_COUNTERS, verdictOf, type FastCounter } from './layouts.ts';

const DROP_COUNTERS = FAST_COUNTERS.filter((counter) => verdictOf(counter)?.action === 'drop');
/** Calls of settle (one a second) a count waits before its unreported drops are summarised. */
export const SETTLE_LAG = 2;

export class KernelDropLedger {
  /** Per cause: drops written (reported or summarised). */
  private readonly written = new Map<FastCounter, number>();
  /** Per cause: drops summarised before their report arrived. */
  private readonly ahead = new Map<FastCounter, number>();
  /** The counters of the last calls of settle, oldest first. */
  private readonly history: Readonly<Record<FastCounter, number>>[] = [];

  /** `totals`: the kernel's counters when the ledger starts (drops before it are not the log's). */
  constructor(totals: Readonly<Record<FastCounter, number>>) {
    for (const counter of DROP_COUNTERS) this.written.set(counter, totals[counter]);
  }

  /** A report of `drops` drops of `cause`: how many of them are still to write. */
  reported(cause: FastCounter, drops: number): number {
    const ahead = this.ahead.get(cause) ?? 0;
    const covered = Math.min(ahead, drops);
    this.ahead.set(cause, ahead - covered);
    this.written.set(cause, (this.written.get(cause) ?? 0) + drops - covered);
    return drops - covered;
  }

  /** Once a second, with the kernel's counters: per cause, drops counted SETTLE_LAG calls ago that no report covered yet, to write now. */
  settle(current: Readonly<Record<FastCounter, number>>): Map<FastCounter, number> {
    const due = new Map<FastCounter, number>();
    this.history.push(current);
    if (this.history.length <= SETTLE_LAG) return due;
    const totals = this.history.shift()!;
    for (const counter of DROP_COUNTERS) {
      const missing = totals[counter] - (this.written.get(counter) ?? 0);
      if (missing <= 0) continue;
      due.set(counter, missing);
      this.written.set(counter, totals[counter]);
      this.ahead.set(counter, (this.ahead.get(counter) ?? 0) + missing);
    }
    return due;
  }
}
