import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { PolicyAuthorizer } from '../../../agent/src/handshake/authorizer.ts';
import type { PolicySet } from '../../../agent/src/policy/policy-set.ts';
import type { VerifiedIdentity } from '../../../agent/src/token/identity-token.ts';
import { compile } from '../../../scripts/lib/policy-dir.ts';

const api = { 'synpass.subject': 'spiffe://d/api', 'app.name': 'api' };

function identity(name: string): VerifiedIdentity {
  const attributes = { 'synpass.subject': `spiffe://d/${name}`, 'app.name': name };
  return { trustDomain: 'd', subject: attributes['synpass.subject'], attributes, provenance: {}, agent: 'spiffe://d/agent/x', expiresAt: 2e9 };
}

function apiAllows(from: string): PolicySet {
  return compile({
    'p.yaml': `policies:\n  - name: api\n    selector: { app.name: api }\n    ingress:\n      - name: r\n        action: allow\n        ports: [8080]\n        from: { app.name: ${from} }\n`,
  });
}

/** Counts how often the set really evaluates, so a remembered decision can be told apart. */
function counted(set: PolicySet): { set: PolicySet; evaluations: () => number } {
  let evaluations = 0;
  const evaluate = set.evaluate.bind(set);
  set.evaluate = (query) => {
    evaluations += 1;
    return evaluate(query);
  };
  return { set, evaluations: () => evaluations };
}

describe('policy authorizer', () => {
  it('remembers a decision per local workload, peer and port, and forgets it when the set changes', () => {
    const first = counted(apiAllows('web'));
    let current = first.set;
    const authorizer = new PolicyAuthorizer(() => current);
    const web = identity('web');
    const query = { local: api, peer: web, peerAddress: '10.0.0.1', port: 8080 };

    const decided = authorizer.ingress(query);
    assert.equal(decided.allowed, true);
    assert.equal(decided.rule, 'api/r');
    assert.deepEqual(authorizer.ingress({ ...query }), decided);
    assert.equal(first.evaluations(), 1, 'the same workload, peer, port and address: remembered');
    assert.deepEqual(authorizer.ingress({ ...query, peerAddress: '10.0.0.2' }), decided);
    assert.equal(first.evaluations(), 1, 'the same identified peer from another address: remembered');

    assert.equal(authorizer.ingress({ ...query, port: 9090 }).allowed, false, 'another port is decided on its own');
    assert.equal(authorizer.ingress({ ...query, peer: identity('web') }).allowed, true, 'another identity object is decided on its own');
    assert.equal(authorizer.ingress({ ...query, peer: null }).allowed, false, 'no identity');
    assert.equal(authorizer.egress(query).rule, null, 'egress is decided on its own (no egress rules)');
    assert.equal(first.evaluations(), 5);

    const second = counted(apiAllows('batch'));
    current = second.set;
    assert.equal(authorizer.ingress(query).allowed, false, 'a reloaded set decides afresh');
    assert.equal(second.evaluations(), 1);
  });

  it('decides a peer without identity per address, since only such a peer can match a rule by its networks', () => {
    const { set, evaluations } = counted(
      compile({
        'p.yaml': [
          'policies:',
          '  - name: api',
          '    selector: { app.name: api }',
          '    ingress:',
          '      - { name: lan, action: allow, ports: [8080], fromNetworks: [10.1.0.0/16] }',
          '      - { name: web, action: allow, ports: [8080], from: { app.name: web } }',
          '',
        ].join('\n'),
      }),
    );
    const authorizer = new PolicyAuthorizer(() => set);
    const anonymous = { local: api, peer: null, port: 8080 };
    assert.equal(authorizer.ingress({ ...anonymous, peerAddress: '10.1.0.5' }).rule, 'api/lan');
    assert.equal(authorizer.ingress({ ...anonymous, peerAddress: '10.2.0.5' }).allowed, false, 'another address outside the network: not the remembered allow');
    assert.equal(evaluations(), 2);
    const batch = { local: api, peer: identity('batch'), port: 8080 };
    assert.equal(authorizer.ingress({ ...batch, peerAddress: '10.1.0.5' }).allowed, false, 'an identified peer is judged by its identity, not by the network it comes from');
    assert.equal(authorizer.ingress({ ...batch, peerAddress: '10.2.0.5' }).allowed, false);
    assert.equal(evaluations(), 3);
  });
});
