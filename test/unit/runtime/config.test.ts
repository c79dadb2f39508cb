import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { OverrideKind } from '../../../agent/src/config-fields.ts';
import { ConfigError, configFields, configTable, loadAgentConfig } from '../../../agent/src/runtime/config.ts';
import { ROOT } from '../../../scripts/lib/lab.ts';
import { scratchDirectory } from '../../../scripts/lib/scratch.ts';

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
  - { name: reports, subject: spiffe://d/reports, cgroups: [/system.slice/reports.service] }
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
    assert.deepEqual([config.workloads[0]?.cgroups, config.workloads[1]?.cgroups, config.workloads[1]?.uids], [[], ['/system.slice/reports.service'], []]);
    assert.deepEqual(config.admission.allowWithoutIdentity, [{ cidr: '10.0.0.0/8', ports: [22] }]);
    assert.deepEqual(config.targets, ['10.0.0.0/8']);
    assert.equal(config.attestors.host, true);
  });

  it('names the field and what it expected', () => {
    fails(`${identity}admission: { protectedPorts: [80000] }\n`, 'admission.protectedPorts[0]');
    fails(`${identity}targets: [not-a-cidr]\n`, 'targets[0]');
    fails(`${identity}unknownField: 1\n`, 'unknownField');
    fails(`mode: identity\nidentity: { subject: spiffe://d/web }\n`, 'identity.credential');
    fails(`${identity}workloads: [{ name: a, subject: s }, { name: a, subject: s }]\n`, 'workloads[1].name');
    for (const path of ['system.slice/a.service', '/system.slice/../a', '/a//b', '/', '/a/']) {
      fails(`${identity}workloads: [{ name: a, subject: s, cgroups: ["${path}"] }]\n`, 'workloads[0].cgroups[0]');
    }
    fails(`${identity}attestors: { host: yes please }\n`, 'attestors.host');
    fails(`mode: sideways\n`, 'mode');
    fails(`: : :\n  - [\n`, '(file)');
  });
});

describe('one table for every configuration field', () => {
  it('docs/operations.md shows exactly the fields, environment names and defaults of the schema', () => {
    const docs = readFileSync(join(ROOT, 'docs/operations.md'), 'utf8');
    const table = /<!-- config table:[^\n]*-->\n([\s\S]*?)\n<!-- end of config table -->/.exec(docs)?.[1];
    assert.equal(table, configTable(), 'regenerate the table: node --import tsx -e "import { configTable } from \'./agent/src/runtime/config.ts\'; console.log(configTable())"');
  });

  it('every field with an environment name is set by it', () => {
    const samples: Record<OverrideKind, string> = { string: 'x', integer: '7', number: '0.5', boolean: 'true', list: '10.9.0.0/16' };
    for (const field of configFields()) {
      if (field.environment === null || field.override === null) continue;
      let parsed: unknown;
      try {
        // Without a file the mode is pass-through, which reads no identity section.
        const mode = field.path.startsWith('identity.') ? { SYNPASS_MODE: 'identity' } : {};
        const config = loadAgentConfig(null, { ...mode, [field.environment]: samples[field.override] });
        parsed = field.path.split('.').reduce<unknown>((node, key) => (node as Record<string, unknown> | null)?.[key], config);
      } catch (error) {
        // A sample the field's bounds refuse still proves the variable reached the field.
        assert.ok(error instanceof ConfigError && error.field.startsWith(field.path.split('.')[0]!), `${field.environment}: ${String(error)}`);
        continue;
      }
      assert.notEqual(parsed, undefined, `${field.environment} reaches ${field.path}`);
    }
  });

  it('a flag or variable that breaks a field is named as the source of the value', () => {
    assert.throws(
      () => loadAgentConfig(null, {}, [{ path: 'datapath.queue', value: 70000, source: '--queue' }]),
      (error: unknown) => error instanceof ConfigError && error.file === '--queue' && error.field === 'datapath.queue' && /0 to 65535/.test(error.expected),
    );
    assert.throws(
      () => loadAgentConfig(null, { SYNPASS_DATAPATH_MTU: '100' }),
      (error: unknown) => error instanceof ConfigError && error.file === 'environment (SYNPASS_DATAPATH_MTU)' && error.field === 'datapath.mtu',
    );
  });

  it('a repeatable flag adds to the list of the file', () => {
    const config = loadAgentConfig(null, { SYNPASS_TARGETS: '10.1.0.0/16' }, [{ path: 'targets', value: ['10.2.0.0/16'], source: '--target', append: true }]);
    assert.deepEqual(config.targets, ['10.1.0.0/16', '10.2.0.0/16']);
  });

  it('new tunables have their documented defaults', () => {
    const config = loadAgentConfig(null, {});
    assert.deepEqual(config.handshake, { timeoutSeconds: 30, maxFlows: 65_536, maxNonces: 262_144, signatureChecksPerSource: 1000, rehearsals: 1500 });
    assert.equal(config.datapath.batchSlots, 32);
    assert.equal(config.telemetry.whoisSocket, '/run/synpass/whois.sock');
    assert.equal(loadAgentConfig(null, { SYNPASS_TELEMETRY_WHOIS_SOCKET: 'off' }).telemetry.whoisSocket, null);
  });
});
