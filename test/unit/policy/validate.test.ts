import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { formatProblem, MAX_FILE_BYTES } from '../../../agent/src/policy/load.ts';
import { PolicySet } from '../../../agent/src/policy/policy-set.ts';
import { loadPolicyDirectory } from '../../../agent/src/policy/load.ts';
import { runPolicyTests } from '../../../agent/src/policy/run-tests.ts';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { load, policyDirectory } from '../../../scripts/lib/policy-dir.ts';

function problems(files: Record<string, string>): string[] {
  return load(files).problems.map(formatProblem);
}

describe('policy validation names file:line:column', () => {
  it('broken YAML', () => {
    // The parser notices the unclosed flow sequence where the input ends.
    assert.deepEqual(problems({ 'a.yaml': 'policies:\n  - name: [x\n' }).map((p) => p.split(': ')[0]), ['a.yaml:3:1']);
  });

  it('unknown fields, wrong types, bad enums, out-of-range ports', () => {
    const found = problems({
      'a.yaml': 'policies:\n  - name: api\n    selector: {}\n    colour: blue\n    order: high\n    ingress:\n      - action: permit\n        from: {}\n        ports: [0]\n',
    });
    assert.ok(found.includes('a.yaml:4:5: unknown field "colour"'), found.join('\n'));
    assert.ok(found.includes('a.yaml:5:12: expected integer'), found.join('\n'));
    assert.ok(found.some((p) => p.startsWith('a.yaml:7:17: expected one of "allow", "deny"')), found.join('\n'));
    assert.ok(found.some((p) => p.startsWith('a.yaml:9:17:')), found.join('\n'));
  });

  it('an attribute no attestor can vouch for', () => {
    const found = problems({ 'a.yaml': 'policies:\n  - name: api\n    selector: { host.nmae: x, kube.namespace: y, k8s.label.app: z, k8s.nmspace: w }\n' });
    assert.equal(found.length, 3, found.join('\n'));
    assert.match(found[0]!, /^a\.yaml:3:17: no attestor vouches for "host\.nmae"/);
    assert.match(found[1]!, /^a\.yaml:3:31: no attestor vouches for namespace "kube"/);
    assert.match(found[2]!, /no attestor vouches for "k8s\.nmspace"/);
  });

  it('duplicate policy names across files, duplicate rule names, contradictory and duplicate rules', () => {
    const duplicates = problems({
      'a.yaml': 'policies:\n  - name: api\n    selector: {}\n',
      'b.yaml': 'policies:\n  - name: other\n    selector: {}\n  - name: api\n    selector: {}\n',
    });
    assert.deepEqual(duplicates, ['b.yaml:4:11: policy name "api" is already used in a.yaml']);
    const found = problems({
      'b.yaml':
        'policies:\n  - name: other\n    selector: {}\n    ingress:\n      - { name: r, action: allow, from: { app.tier: fe }, ports: [80, 443] }\n      - { name: r, action: deny, from: { app.tier: fe }, ports: [443, 80] }\n',
    });
    assert.ok(found.some((p) => p.startsWith('b.yaml:6:9: contradicts rule 0')), found.join('\n'));
    assert.ok(found.some((p) => p.includes('rule name "r" is used twice')), found.join('\n'));
  });

  it('rules that name no peer, or the wrong side', () => {
    const found = problems({
      'a.yaml': 'policies:\n  - name: api\n    selector: {}\n    ingress: [{ action: allow, ports: [1] }]\n    egress: [{ action: allow, from: {} }]\n',
    });
    assert.ok(found.some((p) => p.includes('a rule needs "from"')), found.join('\n'));
    assert.ok(found.some((p) => p.includes('egress rules name the peer with "to"')), found.join('\n'));
  });

  it('bad networks', () => {
    const found = problems({ 'a.yaml': 'policies:\n  - name: api\n    selector: {}\n    ingress: [{ action: allow, fromNetworks: [10.0.0.0/33, 300.1.1.1/8] }]\n' });
    assert.equal(found.length, 2, found.join('\n'));
  });

  it('a huge file is refused, not parsed', () => {
    const found = problems({ 'a.yaml': `# ${'x'.repeat(MAX_FILE_BYTES)}\n` });
    assert.deepEqual(found, [`a.yaml:1:1: larger than ${MAX_FILE_BYTES} bytes`]);
  });

  it('reads a Kubernetes ConfigMap volume once: hidden ..data directories are skipped', () => {
    const directory = policyDirectory({});
    mkdirSync(join(directory, '..2026_11_23'));
    writeFileSync(join(directory, '..2026_11_23', 'api.yaml'), 'policies:\n  - name: api\n    selector: {}\n');
    symlinkSync('..2026_11_23', join(directory, '..data'));
    symlinkSync(join('..data', 'api.yaml'), join(directory, 'api.yaml'));
    const result = loadPolicyDirectory(directory);
    assert.deepEqual(result.problems, []);
    assert.deepEqual(result.files.map((f) => f.file), ['api.yaml']);
  });

  it('a broken file keeps the whole set from compiling (never a partial policy)', () => {
    const result = load({ 'good.yaml': 'policies:\n  - name: api\n    selector: {}\n', 'bad.yaml': 'policies: 3\n' });
    assert.equal(result.problems.length, 1);
  });
});

describe('shipped examples', () => {
  const root = fileURLToPath(new URL('../../../', import.meta.url));
  for (const example of ['three-tier', 'federation']) {
    it(`policy/examples/${example} validates and its tests pass`, () => {
      const loaded = loadPolicyDirectory(`${root}policy/examples/${example}`);
      assert.deepEqual(loaded.problems, []);
      const results = runPolicyTests(new PolicySet(loaded.files, loaded.contentHash), loaded.files);
      assert.ok(results.length >= 4);
      assert.deepEqual(results.filter((r) => !r.passed).map((r) => r.test.name), []);
    });
  }

  it('the CLI exits 1 on a broken set and 0 on the examples', () => {
    const cli = `${root}agent/src/cli/main.ts`;
    const run = (args: string[]) => {
      try {
        return { code: 0, out: execFileSync(process.execPath, ['--import', 'tsx', cli, ...args], { encoding: 'utf8', stdio: 'pipe' }) };
      } catch (error) {
        const e = error as { status: number; stderr: string };
        return { code: e.status, out: e.stderr };
      }
    };
    assert.equal(run(['policy', 'validate', `${root}policy/examples/three-tier`]).code, 0);
    const bad = load({ 'x.yaml': 'policies: [{ name: Bad }]\n' });
    assert.ok(bad.problems.length > 0);
  });
});
