import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, loadAgentConfig } from '../../../agent/src/runtime/config.ts';
import { scratchDirectory } from '../../support/scratch.ts';

const directory = scratchDirectory('config');
let counter = 0;

function load(yaml: string) {
  const file = join(directory, `agent-${counter++}.yaml`);
  writeFileSync(file, yaml);
  return loadAgentConfig(file);
}

function fails(yaml: string, field: string): void {
  assert.throws(
    () => load(yaml),
    (error: unknown) => error instanceof ConfigError && error.field === field,
    `expected an error naming ${field}`,
  );
}

const identity = `identity:
  subject: spiffe://d/web
  credential: c.jwt
  signingKey: s.pem
  keyAgreementKey: k.pem
  trustBundles: bundles
`;

describe('agent configuration', () => {
  it('reads a full configuration and resolves paths against the file', () => {
    const config = load(`${identity}workloads:
  - { name: batch, subject: spiffe://d/batch, uids: [1001], ports: [9000], attributes: { app.tier: batch } }
attestors: { static: { app.name: web }, host: true, env: [ZONE] }
admission:
  protectedPorts: [8080]
  allow: [{ subject: "spiffe://d/*", attributes: { app.tier: frontend }, ports: [8080] }]
  allowWithoutIdentity: [{ cidr: 10.0.0.0/8, ports: [22] }]
targets: [10.0.0.0/8]
`);
    assert.equal(config.mode, 'identity');
    assert.equal(config.identity?.credential, join(directory, 'c.jwt'));
    assert.equal(config.identity?.tokenTtlMinutes, 10);
    assert.deepEqual(config.workloads[0]?.uids, [1001]);
    assert.deepEqual(config.admission.allowWithoutIdentity, [{ cidr: '10.0.0.0/8', ports: [22] }]);
    assert.deepEqual(config.targetNetworks, ['10.0.0.0/8']);
    assert.equal(config.attestors.host, true);
  });

  it('names the field and what it expected', () => {
    fails(`${identity}admission: { protectedPorts: [80000] }\n`, 'admission.protectedPorts[0]');
    fails(`${identity}targets: [not-a-cidr]\n`, 'targets[0]');
    fails(`${identity}unknownField: 1\n`, 'unknownField');
    fails(`mode: identity\nidentity: { subject: spiffe://d/web }\n`, 'identity.credential');
    fails(`${identity}workloads: [{ name: a, subject: s }, { name: a, subject: s }]\n`, 'workloads[1].name');
    fails(`${identity}attestors: { host: yes please }\n`, 'attestors.host');
    fails(`mode: sideways\n`, 'mode');
    fails(`: : :\n  - [\n`, '(file)');
  });
});
