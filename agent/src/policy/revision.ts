// A policy set's revision: the git commit when the directory is a clean part of a repository,
// otherwise (or with local edits) the content hash of its files.
import { execFileSync } from 'node:child_process';

export function policyRevision(directory: string, contentHash: string): string {
  try {
    const commit = execFileSync('git', ['-C', directory, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const dirty = execFileSync('git', ['-C', directory, 'status', '--porcelain', '--', '.'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return dirty === '' ? `git:${commit}` : `git:${commit}+${contentHash}`;
  } catch {
    return `sha256:${contentHash}`;
  }
}
