// Writes policy files into a fresh temporary directory and compiles them.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadPolicyDirectory, type LoadResult } from '../../agent/src/policy/load.ts';
import { PolicySet } from '../../agent/src/policy/policy-set.ts';
import { scratchDirectory } from './scratch.ts';

export function policyDirectory(files: Record<string, string>): string {
  const directory = scratchDirectory('policy');
  for (const [name, text] of Object.entries(files)) writeFileSync(join(directory, name), text);
  return directory;
}

export function load(files: Record<string, string>): LoadResult {
  return loadPolicyDirectory(policyDirectory(files));
}

export function compile(files: Record<string, string>): PolicySet {
  const loaded = load(files);
  if (loaded.problems.length > 0) throw new Error(loaded.problems.map((p) => `${p.file}:${p.line}:${p.column}: ${p.message}`).join('\n'));
  return new PolicySet(loaded.files, loaded.contentHash);
}
