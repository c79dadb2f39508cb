// The C reference loop (scripts/benchmarks/nfq-reference.c): the smallest consumer of the agent's
// own rules and queue, which scripts/bench measures as the floor of a user-space trip. Shared by
// the bench and the e2e test that keeps it honest.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { DEFAULT_DATAPATH } from '../../agent/src/runtime/config.ts';
import type { Lab, NetnsProcess } from './lab.ts';
import { scratchDirectory } from './scratch.ts';

const SOURCE = new URL('../benchmarks/nfq-reference.c', import.meta.url).pathname;
const RULES = new URL('../benchmarks/reference-rules.ts', import.meta.url).pathname;
const HOSTS = ['api', 'web'] as const;

/** Compiles the loop into a new temporary directory and returns the binary's path; throws if `cc` fails. */
export function compileReferenceLoop(): string {
  const binary = join(scratchDirectory('reference'), 'nfq-reference');
  execFileSync('cc', ['-O2', '-Wall', '-Werror', '-o', binary, SOURCE, '-lmnl'], { stdio: 'pipe' });
  return binary;
}

export interface ReferenceLoops {
  loops: NetnsProcess[];
  /** Removes the rules, then stops the loops (each prints its packet count as it exits). */
  stop(): Promise<void>;
}

/**
 * Starts the loop in api and web, then installs the agent's rules there with the agent's own
 * code and defaults (`exclusions`: `--exclude <cidr>` pairs, as the agent takes them).
 */
export async function startReferenceLoops(lab: Lab, binary: string, exclusions: string[] = []): Promise<ReferenceLoops> {
  const rules = (host: (typeof HOSTS)[number], args: string[]): void => {
    lab.exec(host, [process.execPath, '--import', 'tsx', RULES, ...args]);
  };
  const loops: NetnsProcess[] = [];
  for (const host of HOSTS) {
    const loop = lab.spawn(host, [binary, String(DEFAULT_DATAPATH.queue), String(DEFAULT_DATAPATH.markBase)]);
    await loop.waitFor((line) => line.bound === DEFAULT_DATAPATH.queue);
    rules(host, ['install', ...lab.networks, ...exclusions]);
    loops.push(loop);
  }
  return {
    loops,
    stop: async () => {
      for (const host of HOSTS) rules(host, ['remove']);
      for (const loop of loops) await loop.stop();
    },
  };
}
