// Runs the `tests:` entries of policy files against the compiled set: a connection is allowed
// when the accepting side's ingress and the connecting side's egress both allow it.
import type { LoadedFile } from './load.ts';
import type { Attributes, PolicyTest } from './model.ts';
import { peerOf, type PolicySet, type PolicyVerdict } from './policy-set.ts';

export interface ConnectionVerdict {
  allowed: boolean;
  ingress: PolicyVerdict;
  egress: PolicyVerdict;
}

export interface ConnectionQuery {
  from: Attributes;
  fromAddress: string | null;
  to: Attributes;
  toAddress: string | null;
  port: number;
}

/** A connection as a `tests:` entry or `policy explain`'s flags describe it: addresses optional. */
export interface ConnectionDescription {
  from: Attributes;
  fromAddress?: string | undefined;
  to: Attributes;
  toAddress?: string | undefined;
  port: number;
}

export function connectionQuery(description: ConnectionDescription): ConnectionQuery {
  return {
    from: description.from,
    fromAddress: description.fromAddress ?? null,
    to: description.to,
    toAddress: description.toAddress ?? null,
    port: description.port,
  };
}

export function evaluateConnection(set: PolicySet, query: ConnectionQuery): ConnectionVerdict {
  const ingress = set.evaluate({ direction: 'ingress', local: query.to, peer: peerOf(query.from), peerAddress: query.fromAddress, port: query.port });
  const egress = set.evaluate({ direction: 'egress', local: query.from, peer: peerOf(query.to), peerAddress: query.toAddress, port: query.port });
  return { allowed: ingress.allowed && egress.allowed, ingress, egress };
}

export interface TestResult {
  file: string;
  line: number;
  test: PolicyTest;
  passed: boolean;
  verdict: ConnectionVerdict;
}

export function runPolicyTests(set: PolicySet, files: readonly LoadedFile[]): TestResult[] {
  const results: TestResult[] = [];
  for (const file of files) {
    file.document.tests?.forEach((test, t) => {
      const verdict = evaluateConnection(set, connectionQuery(test));
      results.push({
        file: file.file,
        line: file.positionOf(['tests', t]).line,
        test,
        passed: (verdict.allowed ? 'allow' : 'deny') === test.expect,
        verdict,
      });
    });
  }
  return results;
}

export function describeVerdict(verdict: PolicyVerdict): string {
  const where = verdict.file === null ? '' : ` (${verdict.file}:${verdict.line ?? '?'})`;
  const observed = verdict.wouldDrop === null ? '' : `, would drop by ${verdict.wouldDrop} (observe mode)`;
  const by = verdict.decidedBy === 'no-policy' ? 'no policy governs it' : `by ${verdict.rule ?? verdict.decidedBy}${where}`;
  return `${verdict.allowed ? 'allow' : 'deny'} ${by}${observed}`;
}
