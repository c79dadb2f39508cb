// The kernel's view of our queues, from /proc/net/netfilter/nfnetlink_queue (per network
// namespace): whether each queue is bound, and what the kernel dropped on its side.
import { readFileSync } from 'node:fs';

export interface KernelQueueStats {
  queue: number;
  portId: number;
  waiting: number;
  dropped: number;
  userDropped: number;
}

export function parseKernelQueues(text: string): KernelQueueStats[] {
  return text
    .split('\n')
    .map((line) => line.trim().split(/\s+/).map(Number))
    .filter((fields) => fields.length >= 8 && fields.every((n) => Number.isFinite(n)))
    .map((f) => ({ queue: f[0]!, portId: f[1]!, waiting: f[2]!, dropped: f[5]!, userDropped: f[6]! }));
}

export function readKernelQueues(path = '/proc/net/netfilter/nfnetlink_queue'): KernelQueueStats[] {
  try {
    return parseKernelQueues(readFileSync(path, 'utf8'));
  } catch {
    return [];
  }
}
