// Runs the synpass command as it ships (dist/) and returns what a person would see.
import { spawnSync } from 'node:child_process';
import { synpassCommand } from '../../scripts/lib/lab.ts';

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `env` adds to the environment without the SYNPASS_* variables of the caller, which configure agents. */
export function runSynpass(args: string[], options: { cwd?: string; env?: Record<string, string> } = {}): CliResult {
  const [node, cli] = synpassCommand();
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('SYNPASS_')));
  const result = spawnSync(node!, [cli!, ...args], {
    cwd: options.cwd ?? process.cwd(),
    env: { ...inherited, ...options.env },
    encoding: 'utf8',
    timeout: 30_000,
  });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}
