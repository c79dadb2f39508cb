import { it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { scratchDirectory } from '../../../scripts/lib/scratch.ts';

const cli = fileURLToPath(new URL('../../../agent/src/cli/main.ts', import.meta.url));

it('policy diff between two commits prints exactly the pairs whose verdict changed', () => {
  const repo = scratchDirectory('diff-repo');
  const git = (...args: string[]) => execFileSync('git', ['-C', repo, ...args], { encoding: 'utf8' }).trim();
  git('init', '-q');
  git('config', 'user.email', 'ci@synpass.test');
  git('config', 'user.name', 'ci');
  mkdirSync(join(repo, 'policies'));
  const write = (text: string) => { writeFileSync(join(repo, 'policies', 'api.yaml'), text); };
  write(
    'policies:\n  - name: api\n    selector: { app.name: api }\n    ingress:\n      - { name: web, action: allow, from: { app.name: web }, ports: [8080] }\n      - { name: batch, action: allow, from: { app.name: batch }, ports: [8080] }\n',
  );
  git('add', '.');
  git('commit', '-q', '-m', 'first');
  const first = git('rev-parse', 'HEAD');
  // Batch loses access; web gains port 9090.
  write(
    'policies:\n  - name: api\n    selector: { app.name: api }\n    ingress:\n      - { name: web, action: allow, from: { app.name: web }, ports: [8080, 9090] }\n',
  );
  git('commit', '-q', '-am', 'second');
  const output = execFileSync(process.execPath, ['--import', 'tsx', cli, 'policy', 'diff', first, 'HEAD', join(repo, 'policies')], { encoding: 'utf8' });
  const lines = output.trim().split('\n');
  assert.match(lines[0]!, /^2 change\(s\) from [0-9a-f]{7,} to [0-9a-f]{7,}$/);
  assert.deepEqual(lines.slice(1).sort(), [
    'allow -> deny  app.name=batch -> app.name=api :8080',
    'deny -> allow  app.name=web -> app.name=api :9090',
  ]);
  const same = execFileSync(process.execPath, ['--import', 'tsx', cli, 'policy', 'diff', 'HEAD', 'HEAD', join(repo, 'policies')], { encoding: 'utf8' });
  assert.match(same, /^0 change\(s\)/);
});
