// `synpass policy ...`: validate, test, explain and diff policy directories, offline.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import type { Command } from 'commander';
import { formatProblem, loadPolicyDirectory } from '../policy/load.ts';
import type { Attributes } from '../policy/model.ts';
import { PolicySet } from '../policy/policy-set.ts';
import { explainConnection, type DirectionExplanation } from '../policy/explain.ts';
import { describeVerdict, runPolicyTests } from '../policy/run-tests.ts';
import { reachabilityDiff } from '../policy/diff.ts';
import { policyRevision } from '../policy/revision.ts';

function out(line = ''): void {
  process.stdout.write(`${line}\n`);
}

/** Loads and compiles, or prints every problem and exits 1. */
export function compileOrExit(directory: string): { set: PolicySet; files: ReturnType<typeof loadPolicyDirectory>['files'] } {
  const loaded = loadPolicyDirectory(directory);
  if (loaded.problems.length > 0) {
    for (const problem of loaded.problems) process.stderr.write(`${formatProblem(problem)}\n`);
    process.stderr.write(`${loaded.problems.length} problem(s) in ${directory}\n`);
    process.exit(1);
  }
  return { set: new PolicySet(loaded.files, policyRevision(directory, loaded.contentHash)), files: loaded.files };
}

function attributesFlag(text: string): Attributes {
  const result: Record<string, string> = {};
  for (const pair of text.split(',').filter(Boolean)) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new Error(`expected key=value, got "${pair}"`);
    result[pair.slice(0, eq).trim()] = pair.slice(eq + 1).trim();
  }
  return result;
}

function printDirection(explanation: DirectionExplanation): void {
  out(`  ${explanation.direction}: policies selecting this side: ${explanation.selectingPolicies.join(', ') || '(none)'}`);
  for (const rule of explanation.rules) {
    if (rule.status === 'not-matched') continue;
    const detail = rule.status === 'near' ? ` (missing: ${rule.missing.join('; ')})` : '';
    out(`    ${rule.status.padEnd(8)} ${rule.action.padEnd(5)} ${rule.rule}${rule.mode === 'observe' ? ' [observe]' : ''} ${rule.file}:${rule.line}${detail}`);
  }
}

function describeClass(attributes: Attributes): string {
  return Object.entries(attributes)
    .filter(([name]) => name !== 'synpass.subject' || !attributes[name]!.startsWith('spiffe://class'))
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
}

export function registerPolicyCommands(program: Command): void {
  const policy = program.command('policy').description('validate, test, explain and diff policy files (offline)');

  policy
    .command('validate')
    .argument('<dir>', 'policy directory')
    .description('check every policy file; problems are printed as file:line:column, exit 1 on any')
    .action((directory: string) => {
      const { set } = compileOrExit(directory);
      out(`ok: ${set.policies.length} policies, ${set.ruleCount} rules, revision ${set.revision}`);
    });

  policy
    .command('test')
    .argument('<dir>', 'policy directory')
    .description('run the tests: entries of every policy file')
    .action((directory: string) => {
      const { set, files } = compileOrExit(directory);
      const results = runPolicyTests(set, files);
      results.forEach((result, i) => {
        out(`${result.passed ? 'ok' : 'not ok'} ${i + 1} - ${result.test.name}`);
        if (!result.passed) {
          out(`  # ${result.file}:${result.line}: expected ${result.test.expect}`);
          out(`  # ingress at "to": ${describeVerdict(result.verdict.ingress)}`);
          out(`  # egress at "from": ${describeVerdict(result.verdict.egress)}`);
        }
      });
      const failed = results.filter((r) => !r.passed).length;
      out(`1..${results.length}`);
      out(`${results.length - failed} passed, ${failed} failed`);
      if (failed > 0) process.exit(1);
    });

  policy
    .command('explain')
    .argument('<dir>', 'policy directory')
    .requiredOption('--from <attributes>', 'connecting side, k=v,... (no synpass.subject: a peer without identity)')
    .requiredOption('--to <attributes>', 'accepting side, k=v,...')
    .requiredOption('--port <n>', 'destination port', (v) => Number(v))
    .option('--from-address <ip>', 'address of an identity-less connecting side')
    .option('--to-address <ip>', 'address of an identity-less accepting side')
    .description('the verdict for one connection, the deciding rules, and the rules that matched or nearly matched')
    .action((directory: string, flags: { from: string; to: string; port: number; fromAddress?: string; toAddress?: string }) => {
      const { set } = compileOrExit(directory);
      const explanation = explainConnection(set, {
        from: attributesFlag(flags.from),
        fromAddress: flags.fromAddress ?? null,
        to: attributesFlag(flags.to),
        toAddress: flags.toAddress ?? null,
        port: flags.port,
      });
      out(`${explanation.verdict.allowed ? 'ALLOW' : 'DENY'} (policy revision ${set.revision})`);
      out(`  ingress at "to": ${describeVerdict(explanation.verdict.ingress)}`);
      out(`  egress at "from": ${describeVerdict(explanation.verdict.egress)}`);
      printDirection(explanation.ingress);
      printDirection(explanation.egress);
    });

  policy
    .command('diff')
    .argument('<refA>', 'git revision before')
    .argument('<refB>', 'git revision after')
    .argument('[dir]', 'policy directory inside the repository', '.')
    .description('reachability between the workload classes the policies name: only the pairs whose verdict changed')
    .action((refA: string, refB: string, directory: string) => {
      const root = execFileSync('git', ['-C', directory, 'rev-parse', '--show-toplevel'], { encoding: 'utf8' }).trim();
      const inRepo = relative(root, resolve(directory));
      const sets = [refA, refB].map((ref) => {
        const scratch = mkdtempSync(join(tmpdir(), 'synpass-diff-'));
        try {
          const listing = execFileSync('git', ['-C', root, 'ls-tree', '-r', '--name-only', ref, '--', inRepo || '.'], { encoding: 'utf8' });
          for (const path of listing.split('\n').filter((p) => /\.ya?ml$/.test(p))) {
            const target = join(scratch, relative(inRepo, path));
            mkdirSync(dirname(target), { recursive: true });
            writeFileSync(target, execFileSync('git', ['-C', root, 'show', `${ref}:${path}`]));
          }
          const loaded = loadPolicyDirectory(scratch);
          if (loaded.problems.length > 0) {
            for (const problem of loaded.problems) process.stderr.write(`${ref}: ${formatProblem(problem)}\n`);
            process.exit(1);
          }
          const commit = execFileSync('git', ['-C', root, 'rev-parse', '--short', ref], { encoding: 'utf8' }).trim();
          return new PolicySet(loaded.files, commit);
        } finally {
          rmSync(scratch, { recursive: true, force: true });
        }
      });
      const changes = reachabilityDiff(sets[0]!, sets[1]!);
      out(`${changes.length} change(s) from ${sets[0]!.revision} to ${sets[1]!.revision}`);
      for (const change of changes) {
        out(`${change.before ? 'allow' : 'deny'} -> ${change.after ? 'allow' : 'deny'}  ${describeClass(change.from)} -> ${describeClass(change.to)} :${change.port}`);
      }
    });
}
