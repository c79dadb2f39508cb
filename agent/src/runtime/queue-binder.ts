// Binding the queues. A queue another process holds (an agent still shutting down, say) makes the
// kernel refuse the bind with EPERM, like a missing capability; the kernel's queue list tells the
// two apart. Held, the agent stays up and unready and tries again every second rather than
// exiting into a restart loop; anything else is an error.
import { constants } from 'node:os';
import { readKernelQueues } from '../datapath/kernel-queue.ts';

const { EBUSY, EPERM } = constants.errno;
export const QUEUE_RETRY_MS = 1_000;

export interface BindAttempts {
  /** Binds, or throws the kernel's refusal. */
  start(): void;
  /** Whether one of the queues is bound by another process now. */
  heldElsewhere(): boolean;
  /** Told once, at the first refusal for a held queue. */
  onWaiting(error: unknown): void;
  /** Checked after each wait: true gives up (the agent is stopping). */
  cancelled(): boolean;
  retryMs?: number;
}

/** Whether any of `queues` appears in the kernel's list of bound queues. */
export function queuesBound(queues: readonly number[]): boolean {
  return readKernelQueues().some((q) => queues.includes(q.queue));
}

/** Resolves true once bound, false when cancelled while waiting; throws what is not a held queue. */
export async function bindWhenFree(attempts: BindAttempts): Promise<boolean> {
  for (let attempt = 1; ; attempt++) {
    try {
      attempts.start();
      return true;
    } catch (error) {
      const refused = (error as { errno?: number }).errno;
      if ((refused !== EPERM && refused !== EBUSY) || !attempts.heldElsewhere()) throw error;
      if (attempt === 1) attempts.onWaiting(error);
      await new Promise((resolve) => setTimeout(resolve, attempts.retryMs ?? QUEUE_RETRY_MS));
      if (attempts.cancelled()) return false;
    }
  }
}
