// What /proc says of a process: CPU time and resident memory, read from outside it.
import { readFileSync } from 'node:fs';

/** /proc reports CPU time in USER_HZ ticks, which Linux fixes at 100 a second for user space. */
export const TICKS_PER_SECOND = 100;

/** User and system CPU time of one process, all its threads, in ticks. */
export function processTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name, which is in parentheses and may contain spaces.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

/** Resident memory of a process, MiB. */
export function rssMiB(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? Number.NaN) / 1024;
}
