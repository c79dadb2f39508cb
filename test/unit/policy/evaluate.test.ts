import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Attributes } from '../../../agent/src/policy/model.ts';
import type { PolicySet } from '../../../agent/src/policy/policy-set.ts';
import { compile } from '../../../scripts/lib/policy-dir.ts';

const api = { 'app.name': 'api', 'synpass.subject': 'spiffe://d/api' };
const web = { 'app.name': 'web', 'app.tier': 'frontend', 'synpass.subject': 'spiffe://d/web-1', 'synpass.trust-domain': 'd' };

function ingress(set: PolicySet, peer: Attributes | null, port = 80, local: Attributes = api, peerAddress: string | null = null) {
  return set.evaluate({ direction: 'ingress', local, peer, peerAddress, port });
}

function apiPolicy(from: string): PolicySet {
  return compile({
    'p.yaml': `policies:\n  - name: api\n    selector: { app.name: api }\n    ingress:\n      - name: r\n        action: allow\n        from: ${from}\n`,
  });
}

describe('selector operators', () => {
  const cases: [string, string, Attributes, boolean][] = [
    ['equals (shorthand)', '{ app.tier: frontend }', web, true],
    ['equals (shorthand), other value', '{ app.tier: backend }', web, false],
    ['equals', '{ app.tier: { equals: frontend } }', web, true],
    ['in', '{ app.tier: { in: [backend, frontend] } }', web, true],
    ['in, absent attribute', '{ app.team: { in: [a] } }', web, false],
    ['notIn', '{ app.tier: { notIn: [backend] } }', web, true],
    ['notIn, listed', '{ app.tier: { notIn: [frontend] } }', web, false],
    ['notIn, absent attribute does not match', '{ app.team: { notIn: [a] } }', web, false],
    ['exists', '{ app.tier: { exists: true } }', web, true],
    ['exists, absent', '{ app.team: { exists: true } }', web, false],
    ['exists: false', '{ app.team: { exists: false } }', web, true],
    ['doesNotExist', '{ app.team: { doesNotExist: true } }', web, true],
    ['doesNotExist, present', '{ app.tier: { doesNotExist: true } }', web, false],
    ['prefix on the identity URI', '{ synpass.subject: { prefix: "spiffe://d/web" } }', web, true],
    ['prefix, other', '{ synpass.subject: { prefix: "spiffe://d/api" } }', web, false],
    ['glob', '{ synpass.subject: { glob: "spiffe://d/web-*" } }', web, true],
    ['glob ? is one character', '{ synpass.subject: { glob: "spiffe://d/web-?" } }', web, true],
    ['glob does not match a prefix only', '{ synpass.subject: { glob: "spiffe://d/web" } }', web, false],
    ['glob escapes regex characters', '{ synpass.subject: { glob: "spiffe://d/web.1" } }', { ...web, 'synpass.subject': 'spiffe://d/webx1' }, false],
    ['all matchers must hold', '{ app.tier: frontend, app.name: api }', web, false],
    ['{} matches any identified peer', '{}', web, true],
  ];
  for (const [name, from, peer, allowed] of cases) {
    it(`${name} -> ${allowed ? 'allow' : 'deny'}`, () => {
      assert.equal(ingress(apiPolicy(from), peer).allowed, allowed);
    });
  }
});

describe('precedence and defaults', () => {
  it('a workload no policy governs is not restricted', () => {
    const set = apiPolicy('{}');
    const verdict = ingress(set, null, 80, { 'app.name': 'db' });
    assert.equal(verdict.allowed, true);
    assert.equal(verdict.decidedBy, 'no-policy');
  });

  it('once selected, a declared direction is denied by default; an undeclared one is not', () => {
    const set = compile({ 'p.yaml': 'policies:\n  - name: api\n    selector: { app.name: api }\n    ingress: []\n' });
    const denied = ingress(set, web);
    assert.equal(denied.allowed, false);
    assert.equal(denied.rule, 'default-deny');
    assert.equal(set.evaluate({ direction: 'egress', local: api, peer: web, peerAddress: null, port: 1 }).decidedBy, 'no-policy');
  });

  it('lower order decides first; an explicit deny beats a later allow', () => {
    const set = compile({
      'a.yaml': 'policies:\n  - name: allow-all\n    order: 200\n    selector: { app.name: api }\n    ingress: [{ name: any, action: allow, from: {} }]\n',
      'b.yaml': 'policies:\n  - name: block-frontend\n    order: 100\n    selector: { app.name: api }\n    ingress: [{ name: fe, action: deny, from: { app.tier: frontend } }]\n',
    });
    const verdict = ingress(set, web);
    assert.equal(verdict.allowed, false);
    assert.equal(verdict.rule, 'block-frontend/fe');
    assert.equal(verdict.file, 'b.yaml');
    assert.equal(verdict.line, 5);
    assert.equal(ingress(set, { ...web, 'app.tier': 'backend' }).rule, 'allow-all/any');
  });

  it('equal order: policy name, then rule position, decides (deterministic)', () => {
    const set = compile({
      'z.yaml': 'policies:\n  - name: a-deny\n    selector: { app.name: api }\n    ingress: [{ action: deny, from: {} }]\n',
      'a.yaml': 'policies:\n  - name: b-allow\n    selector: { app.name: api }\n    ingress: [{ action: allow, from: {} }]\n',
    });
    assert.equal(ingress(set, web).rule, 'a-deny/ingress-0');
    const sameP = compile({
      'p.yaml': 'policies:\n  - name: p\n    selector: { app.name: api }\n    ingress:\n      - { name: first, action: allow, from: { app.tier: frontend } }\n      - { name: second, action: deny, from: {} }\n',
    });
    assert.equal(ingress(sameP, web).rule, 'p/first');
    assert.equal(ingress(sameP, { ...web, 'app.tier': 'x' }).rule, 'p/second');
  });

  it('ports restrict a rule', () => {
    const set = compile({ 'p.yaml': 'policies:\n  - name: p\n    selector: { app.name: api }\n    ingress: [{ action: allow, from: {}, ports: [443] }]\n' });
    assert.equal(ingress(set, web, 443).allowed, true);
    assert.equal(ingress(set, web, 80).allowed, false);
  });

  it('peers without identity match network rules only, and network rules never match identified peers', () => {
    const set = compile({ 'p.yaml': 'policies:\n  - name: p\n    selector: { app.name: api }\n    ingress: [{ action: allow, fromNetworks: [10.1.0.0/16, "fd00::/8"], ports: [22] }]\n' });
    assert.equal(ingress(set, null, 22, api, '10.1.2.3').allowed, true);
    assert.equal(ingress(set, null, 22, api, 'fd00::5').allowed, true);
    assert.equal(ingress(set, null, 22, api, '10.2.0.1').allowed, false);
    assert.equal(ingress(set, web, 22, api, '10.1.2.3').allowed, false);
  });

  it('a port is closed to peers without identity only where no network rule reaches it and the default deny is enforced', () => {
    const set = compile({ 'p.yaml': 'policies:\n  - name: p\n    selector: { app.name: api }\n    ingress: [{ action: allow, fromNetworks: [10.1.0.0/16], ports: [22] }, { action: allow, from: { app.tier: frontend }, ports: [80] }]\n' });
    assert.equal(set.closedToAnonymous(api, 22), false, 'a network rule reaches 22');
    assert.equal(set.closedToAnonymous(api, 80), true, 'only identities reach 80');
    assert.equal(set.closedToAnonymous(api, 9999), true, 'default deny');
    assert.equal(set.closedToAnonymous(web, 80), false, 'no policy governs web: everything is admitted');
    const everywhere = compile({ 'p.yaml': 'policies:\n  - name: p\n    selector: { app.name: api }\n    ingress: [{ action: deny, fromNetworks: [10.1.0.0/16] }]\n' });
    assert.equal(everywhere.closedToAnonymous(api, 80), false, 'a network rule on every port leaves them to the queue');
    const observed = compile({ 'p.yaml': 'policies:\n  - name: p\n    mode: observe\n    selector: { app.name: api }\n    ingress: []\n' });
    assert.equal(observed.closedToAnonymous(api, 80), false, 'an observed default deny lets them through');
  });

  it('observe mode: a deny rule lets the connection through and names itself; so does an observed default deny', () => {
    const rule = compile({ 'p.yaml': 'policies:\n  - name: p\n    selector: { app.name: api }\n    ingress: [{ name: no-fe, action: deny, mode: observe, from: { app.tier: frontend } }]\n' });
    const verdict = ingress(rule, web);
    assert.equal(verdict.allowed, true);
    assert.equal(verdict.wouldDrop, 'p/no-fe');
    const policy = compile({ 'p.yaml': 'policies:\n  - name: p\n    mode: observe\n    selector: { app.name: api }\n    ingress: []\n' });
    const observed = ingress(policy, web);
    assert.deepEqual([observed.allowed, observed.wouldDrop], [true, 'default-deny']);
    // One enforcing policy governing the same direction makes the default deny real.
    const mixed = compile({
      'p.yaml': 'policies:\n  - name: p\n    mode: observe\n    selector: { app.name: api }\n    ingress: []\n  - name: q\n    selector: { app.name: api }\n    ingress: []\n',
    });
    assert.equal(ingress(mixed, web).allowed, false);
  });

  it('carries the revision of the set in every verdict', () => {
    const set = apiPolicy('{}');
    assert.equal(ingress(set, web).revision, set.revision);
    assert.match(set.revision, /^[0-9a-f]{12}$/);
  });
});
