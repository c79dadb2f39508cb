// What the listener sweep (native/bpf/listener_sweep.bpf.c) did at attach: the listeners that
// were already open when the fast path's programs were attached, and now answer fast SYNs too.
import { constants } from 'node:os';
import { SweepOutcome, type ErrnoError, type SweptListener } from '../native/addon.ts';

export interface ListenerSweep {
  /** Ports of the listeners the sweep put on the fast path (open before its programs were attached), in order. */
  enabled: number[];
  /** Listeners in the cgroup that already answered fast SYNs (opened while programs were attached). */
  alreadyEnabled: number;
  /** Why listeners already open were not swept (null: they were). */
  notRun: string | null;
}

/** The sweep's records, one per listener in the fast path's cgroup (IPv4 and IPv6 sockets of one port count once). */
export function summarizeSweep(listeners: readonly SweptListener[]): ListenerSweep {
  const enabled = new Set<number>();
  const already = new Set<number>();
  let unsupported = 0;
  for (const { port, outcome } of listeners) {
    if (outcome === SweepOutcome.Enabled) enabled.add(port);
    else if (outcome === SweepOutcome.Already) already.add(port);
    else unsupported += 1;
  }
  return {
    enabled: [...enabled].sort((a, b) => a - b),
    alreadyEnabled: already.size,
    notRun: unsupported > 0 && enabled.size === 0 ? 'this kernel lets no iterator set the socket flag (that needs Linux 6.12 or later)' : null,
  };
}

/** A sweep the kernel refused: nothing swept, and why. */
export function refusedSweep(error: unknown): ListenerSweep {
  const reason = (error as ErrnoError).errno === constants.errno.EPERM ? 'needs CAP_PERFMON (a BPF iterator is a tracing program; the fast path runs without it)' : (error as Error).message;
  return { enabled: [], alreadyEnabled: 0, notRun: reason };
}
