// The kernel fast path's part of an agent's status as tests read it, and what moved between two
// readings of its counters.

export interface KernelFastPathStatus {
  running: boolean;
  reason: string;
  counters: Record<string, number>;
  /** On a node: whether its pods' SYNs to service addresses are judged after the DNAT, and why (not). */
  serviceSyns?: { deferred: boolean; reason: string };
}

/** The `kernelFastPath` part of an agent's status (statusOf: what the status socket returned). */
export function kernelFastPathOf(statusOf: unknown): KernelFastPathStatus {
  return (statusOf as { kernelFastPath: KernelFastPathStatus }).kernelFastPath;
}

/** Counter increases between two readings, only those that moved. */
export function countersMoved(before: Pick<KernelFastPathStatus, 'counters'>, after: Pick<KernelFastPathStatus, 'counters'>): Record<string, number> {
  return Object.fromEntries(Object.entries(after.counters).flatMap(([name, value]) => (value === before.counters[name] ? [] : [[name, value - (before.counters[name] ?? 0)]])));
}
