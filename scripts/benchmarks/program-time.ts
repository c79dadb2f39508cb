// The kernel's own count of the time its BPF programs ran (kernel.bpf_stats_enabled), summed over
// the synpass programs on this machine: what the fast path's programs cost a connection, apart
// from the rest of its CPU. Root.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';

const STATS_SETTING = '/proc/sys/kernel/bpf_stats_enabled';

/** Turns the kernel's program statistics on; the function it returns puts the setting back. */
export function enableProgramStats(): () => void {
  const before = readFileSync(STATS_SETTING, 'utf8').trim();
  writeFileSync(STATS_SETTING, '1');
  return () => {
    writeFileSync(STATS_SETTING, before);
  };
}

/** Nanoseconds the synpass programs loaded on this machine have run so far, all together. */
export function synpassProgramNanoseconds(): number {
  const programs = JSON.parse(execFileSync('bpftool', ['prog', 'show', '-j'], { encoding: 'utf8' })) as { name?: string; run_time_ns?: number }[];
  return programs.filter((program) => program.name?.startsWith('synpass') === true).reduce((sum, program) => sum + (program.run_time_ns ?? 0), 0);
}
