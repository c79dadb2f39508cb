// `synpass policy ...`: validate, test, explain and diff policy directories, offline.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import { SynpassError } from '../errors.ts';
import { EXIT_NO, guarded } from './exit.ts';
import { formatProblem, loadPolicyDirectory } from '../policy/load.ts';
import type { Attributes } from '../policy/model.ts';
import { PolicySet } from '../policy/policy-set.ts';
import { explainConnection, type DirectionExplanation } from '../policy/explain.ts';
import { connectionQuery, describeVerdict, runPolicyTests } from '../policy/run-tests.ts';
import { reachabilityDiff } from '../policy/diff.ts';
import { policyRevision } from '../policy/revision.ts';

function out(line = ''): void {
  process.stdout.write(`${line}\n`);
}

/** Loads and compiles, or prints every problem and exits 1 (an unreadable directory throws). */
function compileOrExit(directory: string): { set: PolicySet; files: ReturnType<typeof loadPolicyDirectory>['files'] } {
  const loaded = loadPolicyDirectory(directory);
  if (loaded.problems.length > 0) {
    for (const problem of loaded.problems) process.stderr.write(`${formatProblem(problem)}\n`);
    process.stderr.write(`${loaded.problems.length} problem(s) in ${directory}\n`);
    process.exit(EXIT_NO);
  }
  return { set: new PolicySet(loaded.files, policyRevision(directory, loaded.contentHash)), files: loaded.files };
}

function attributesFlag(text: string): Attributes {
  const result: Record<string, string> = {};
  for (const pair of text.split(',').filter(Boolean)) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new InvalidArgumentError(`expected key=value,..., got "${pair}"`);
    result[pair.slice(0, eq).trim()] = pair.slice(eq + 1).trim();
  }
  return result;
}

function port(text: string): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1 || value > 65535) throw new InvalidArgumentError('expected a port from 1 to 65535');
  return value;
}

/** A failed git call as one line (a bad revision, not a repository), not a stack trace. */
function git(args: string[]): string {
  try {
    return execFileSync('git', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (error) {
    const { stderr } = error as { stderr?: string | Buffer };
    const said = (stderr ?? '').toString().trim().split('\n')[0];
    throw new PolicyCommandError('git-failed', `git ${args.filter((arg) => arg !== '-C').join(' ')}: ${said || (error as Error).message}`);
  }
}

export class PolicyCommandError extends SynpassError<'git-failed'> {
  override readonly name = 'PolicyCommandError';
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
    .description('check every policy file; problems are printed as file:line:column; exit 1 on any, 2 if the directory cannot be read')
    .action(guarded('policy validate', (directory: string) => {
      const { set } = compileOrExit(directory);
      out(`ok: ${set.policies.length} policies, ${set.ruleCount} rules, revision ${set.revision}`);
    }));

  policy
    .command('test')
    .argument('<dir>', 'policy directory')
    .description('run the tests: entries of every policy file; exit 1 if one fails or a file has a problem')
    .action(guarded('policy test', (directory: string) => {
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
      if (failed > 0) process.exit(EXIT_NO);
    }));

  policy
    .command('explain')
    .argument('<dir>', 'policy directory')
    .requiredOption('--from <attributes>', 'connecting side, k=v,... (without synpass.subject: a peer without identity)', attributesFlag)
    .requiredOption('--to <attributes>', 'accepting side, k=v,... (without synpass.subject: a peer without identity)', attributesFlag)
    .requiredOption('--port <n>', 'destination port', port)
    .option('--from-address <ip>', 'address of an identity-less connecting side')
    .option('--to-address <ip>', 'address of an identity-less accepting side')
    .description('the verdict for one connection, the deciding rules, and the rules that matched or nearly matched; exit 0 ALLOW, 1 DENY, 2 bad input')
    .action(guarded('policy explain', (directory: string, flags: { from: Attributes; to: Attributes; port: number; fromAddress?: string; toAddress?: string }) => {
      const { set } = compileOrExit(directory);
      const explanation = explainConnection(set, connectionQuery(flags));
      out(`${explanation.verdict.allowed ? 'ALLOW' : 'DENY'} (policy revision ${set.revision})`);
      out(`  ingress at "to": ${describeVerdict(explanation.verdict.ingress)}`);
      out(`  egress at "from": ${describeVerdict(explanation.verdict.egress)}`);
      printDirection(explanation.ingress);
      printDirection(explanation.egress);
      if (!explanation.verdict.allowed) {
        for (const [side, attributes] of [['--from', flags.from], ['--to', flags.to]] as const) {
          if (attributes['synpass.subject'] === undefined) {
            out(`note: ${side} has no synpass.subject, so it was judged as a peer without identity; add synpass.subject=spiffe://... to judge a workload`);
          }
        }
        process.exit(EXIT_NO);
      }
    }));

  policy
    .command('diff')
    .argument('<refA>', 'git revision before')
    .argument('<refB>', 'git revision after')
    .argument('[dir]', 'policy directory inside the repository', '.')
    .description('reachability between the workload classes the policies name: only the pairs whose verdict changed')
    .action(guarded('policy diff', (refA: string, refB: string, directory: string) => {
      const root = git(['-C', directory, 'rev-parse', '--show-toplevel']).trim();
      const inRepo = relative(root, resolve(directory));
      const sets = [refA, refB].map((ref) => {
        const scratch = mkdtempSync(join(tmpdir(), 'synpass-diff-'));
        try {
          const listing = git(['-C', root, 'ls-tree', '-r', '--name-only', ref, '--', inRepo || '.']);
          for (const path of listing.split('\n').filter((p) => /\.ya?ml$/.test(p))) {
            const target = join(scratch, relative(inRepo, path));
            mkdirSync(dirname(target), { recursive: true });
            writeFileSync(target, execFileSync('git', ['-C', root, 'show', `${ref}:${path}`]));
          }
          const loaded = loadPolicyDirectory(scratch);
          if (loaded.problems.length > 0) {
            for (const problem of loaded.problems) process.stderr.write(`${ref}: ${formatProblem(problem)}\n`);
            process.exit(EXIT_NO);
          }
          const commit = git(['-C', root, 'rev-parse', '--short', ref]).trim();
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
    }));
}
