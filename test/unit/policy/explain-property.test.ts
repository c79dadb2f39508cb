// Property: on random policies and random connections, explain tells the same story as the
// evaluator: the rule it marks "decided" is the verdict's rule, and no earlier rule matched.
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { explainConnection, type DirectionExplanation } from '../../../agent/src/policy/explain.ts';
import type { PolicyVerdict } from '../../../agent/src/policy/policy-set.ts';
import { compile } from '../../../scripts/lib/policy-dir.ts';

/** Deterministic so a failure can be replayed (mulberry32). */
function random(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const names = ['a', 'b', 'c'];
const tiers = ['fe', 'be'];
const ports = [80, 443, 8080];

function pick<T>(next: () => number, items: readonly T[]): T {
  return items[Math.floor(next() * items.length)]!;
}

function matcher(next: () => number): string {
  const r = next();
  if (r < 0.3) return `app.tier: ${pick(next, tiers)}`;
  if (r < 0.45) return `app.tier: { in: [${tiers.join(', ')}] }`;
  if (r < 0.6) return `app.tier: { notIn: [${pick(next, tiers)}] }`;
  if (r < 0.7) return `app.team: { exists: ${next() < 0.5} }`;
  if (r < 0.8) return `app.team: { doesNotExist: true }`;
  if (r < 0.9) return `synpass.subject: { glob: "spiffe://d/${pick(next, names)}*" }`;
  return `synpass.subject: { prefix: "spiffe://d/" }`;
}

function randomPolicies(next: () => number): string {
  const lines = ['policies:'];
  for (let p = 0; p < 6; p++) {
    lines.push(`  - name: p${p}`, `    order: ${Math.floor(next() * 3) * 100}`, `    mode: ${next() < 0.2 ? 'observe' : 'enforce'}`);
    lines.push(`    selector: { ${next() < 0.8 ? `app.name: ${pick(next, names)}` : ''} }`);
    for (const [direction, peer] of [['ingress', 'from'], ['egress', 'to']] as const) {
      if (next() < 0.3) continue;
      lines.push(`    ${direction}:`);
      for (let r = 0; r < 3; r++) {
        const parts = [`action: ${next() < 0.6 ? 'allow' : 'deny'}`, `${peer}: { ${next() < 0.7 ? matcher(next) : ''} }`];
        // Rule 0 covers every port; later rules one port each, so no two rules are identical
        // (validation refuses duplicates) while ports still vary.
        if (r > 0) parts.push(`ports: [${ports[r]!}]`);
        if (next() < 0.15) parts.push('mode: observe');
        lines.push(`      - { name: r${r}, ${parts.join(', ')} }`);
      }
    }
  }
  return `${lines.join('\n')}\n`;
}

function side(next: () => number): Record<string, string> {
  const attributes: Record<string, string> = { 'app.name': pick(next, names), 'app.tier': pick(next, tiers) };
  if (next() < 0.5) attributes['app.team'] = 'x';
  if (next() < 0.9) attributes['synpass.subject'] = `spiffe://d/${attributes['app.name']!}${Math.floor(next() * 3)}`;
  return attributes;
}

function agrees(verdict: PolicyVerdict, explanation: DirectionExplanation): void {
  const decided = explanation.rules.filter((r) => r.status === 'decided');
  if (verdict.decidedBy === 'rule') {
    assert.deepEqual(decided.map((r) => r.rule), [verdict.rule]);
    const position = explanation.rules.findIndex((r) => r.status === 'decided');
    assert.ok(explanation.rules.slice(0, position).every((r) => r.status !== 'matched'), 'no earlier rule matched');
  } else {
    assert.deepEqual(decided, []);
    assert.ok(explanation.rules.every((r) => r.status !== 'matched'), 'a matching rule would have decided');
    if (verdict.decidedBy === 'no-policy') assert.deepEqual(explanation.rules, []);
  }
}

it('explain agrees with the evaluator on random policies and connections', () => {
  let checked = 0;
  const decidedBy = new Map<string, number>();
  for (let seed = 1; seed <= 40; seed++) {
    const next = random(seed);
    let set;
    try {
      set = compile({ 'random.yaml': randomPolicies(next) });
    } catch {
      continue; // a generated set that validation refuses (e.g. contradictory rules)
    }
    for (let i = 0; i < 50; i++) {
      const from = side(next);
      const to = side(next);
      const query = { from, fromAddress: from['synpass.subject'] ? null : '10.0.0.1', to, toAddress: to['synpass.subject'] ? null : '10.0.0.2', port: pick(next, ports) };
      const explanation = explainConnection(set, query);
      agrees(explanation.verdict.ingress, explanation.ingress);
      agrees(explanation.verdict.egress, explanation.egress);
      for (const verdict of [explanation.verdict.ingress, explanation.verdict.egress]) {
        const kind = `${verdict.decidedBy}${verdict.wouldDrop ? '+observed' : ''}`;
        decidedBy.set(kind, (decidedBy.get(kind) ?? 0) + 1);
      }
      checked += 1;
    }
  }
  assert.ok(checked >= 1000, `checked ${checked} connections`);
  // The generator reaches every kind of outcome, or the property proves little.
  for (const kind of ['rule', 'default-deny', 'no-policy', 'rule+observed']) assert.ok((decidedBy.get(kind) ?? 0) > 20, `${kind}: ${JSON.stringify([...decidedBy])}`);
});
