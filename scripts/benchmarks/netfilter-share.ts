// Where a bulk transfer's CPU goes in netfilter, from a system-wide perf sample taken while it
// runs. iperf3's throughput swings by about 10% between runs on this VM, more than the agents'
// per-packet rules can cost; the share of busy CPU spent in rules and in connection tracking
// varies by about one point between rounds, small next to the agents' 3-5 points.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Percent of the machine's busy samples (the idle task excluded). */
export interface NetfilterShare {
  /** Hook dispatch and rule evaluation: nf_tables and the xtables matches it calls. */
  rules: number;
  conntrack: number;
  /** BPF programs' own code (the kernel fast path's tc and sock_ops programs); not the hook that runs them. */
  programs: number;
}

const RULES = /^(nf_hook_slow|nft_|__nft_|xt_|tcp_mt|connmark_mt|mark_mt|comment_mt)/;
const CONNTRACK = /^(nf_conntrack|__nf_conntrack|nf_ct_|__nf_ct_|ipv4_conntrack|ipv6_conntrack|nf_confirm|hash_conntrack)/;
/** A JIT-compiled program, as perf names it: bpf_prog_<tag>_<name>. */
const PROGRAM = /^bpf_prog_[0-9a-f]+_/;

export function perfAvailable(): boolean {
  return spawnSync('perf', ['--version'], { stdio: 'ignore' }).status === 0;
}

/** Runs `run` while perf samples every CPU for its first `seconds`. */
export async function sampleNetfilter<T>(seconds: number, run: () => Promise<T>): Promise<{ result: T; share: NetfilterShare | null }> {
  const directory = mkdtempSync(join(tmpdir(), 'synpass-perf-'));
  const data = join(directory, 'perf.data');
  try {
    const perf = spawn('perf', ['record', '--all-cpus', '--quiet', '--output', data, '--', 'sleep', String(seconds)], { stdio: 'ignore' });
    const exited = new Promise<number | null>((resolve) => {
      perf.on('exit', resolve);
      perf.on('error', () => {
        resolve(null);
      });
    });
    const result = await run();
    if ((await exited) !== 0) return { result, share: null };
    const report = spawnSync('perf', ['report', '--input', data, '--no-children', '--sort', 'comm,sym', '--stdio', '--quiet', '--percent-limit', '0'], {
      encoding: 'utf8',
      maxBuffer: 64 * 1024 * 1024,
    });
    return { result, share: report.status === 0 ? shareOf(report.stdout) : null };
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
}

/** From `perf report --sort comm,sym` lines ("  1.51%  node  [k] nft_do_chain"). */
export function shareOf(report: string): NetfilterShare | null {
  let busy = 0;
  let rules = 0;
  let conntrack = 0;
  let programs = 0;
  for (const line of report.split('\n')) {
    const fields = /^\s*([\d.]+)%\s+(\S+)\s+\[.\]\s+(\S+)/.exec(line);
    if (fields === null || fields[2] === 'swapper') continue;
    const percent = Number(fields[1]);
    const symbol = fields[3]!;
    busy += percent;
    if (RULES.test(symbol)) rules += percent;
    else if (CONNTRACK.test(symbol)) conntrack += percent;
    else if (PROGRAM.test(symbol)) programs += percent;
  }
  return busy > 0 ? { rules: (100 * rules) / busy, conntrack: (100 * conntrack) / busy, programs: (100 * programs) / busy } : null;
}
