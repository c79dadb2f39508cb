// Configurable attestors: each kind's field parses the configuration into the attestor it asks
// for, and a new kind (docs/examples/lockdown-attestor.ts) needs nothing but its file and a line
// in the registry.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { lockdownKind, LockdownAttestor } from '../../../docs/examples/lockdown-attestor.ts';
import { fieldTypes } from '../../../agent/src/config-fields.ts';
import { ATTESTOR_KINDS } from '../../../agent/src/identity/attestors/registry.ts';
import { loadAgentConfig } from '../../../agent/src/runtime/config.ts';
import { buildAttestors, credentialNamespaces } from '../../../agent/src/runtime/handlers.ts';
import { scratchDirectory } from '../../../scripts/lib/scratch.ts';

describe('attestor registry', () => {
  it('the configuration turns on the attestors it names, in registry order, each with its namespaces', () => {
    const directory = scratchDirectory('attestors');
    const file = join(directory, 'agent.yaml');
    writeFileSync(file, 'mode: pass-through\nattestors: { static: { app.name: web }, host: true, env: [ZONE], postureFile: posture.json }\n');
    const config = loadAgentConfig(file, {});
    assert.deepEqual(buildAttestors(config.attestors).map((a) => a.name), ['static', 'host', 'env', 'posture']);
    assert.equal(config.attestors.postureFile, join(directory, 'posture.json'), 'paths are resolved against the file');
    assert.deepEqual(credentialNamespaces(config), ['app', 'env', 'host', 'posture']);
    assert.deepEqual(buildAttestors(loadAgentConfig(null, {}).attestors).map((a) => a.name), ['static'], 'off by default, static labels aside');
  });

  it('every registered kind has its own key', () => {
    const keys = ATTESTOR_KINDS.map((kind) => kind.key);
    assert.equal(new Set(keys).size, keys.length);
  });

  it('the documented example is a complete kind: its field parses and makes its attestor', async () => {
    const schema = z.strictObject({ [lockdownKind.key]: lockdownKind.field(fieldTypes('/')) });
    assert.equal(lockdownKind.create(schema.parse({})[lockdownKind.key]), null, 'off by default');
    const attestor = lockdownKind.create(schema.parse({ lockdown: true })[lockdownKind.key]);
    assert.ok(attestor instanceof LockdownAttestor);
    assert.throws(() => schema.parse({ lockdown: 'yes' }));
    const directory = scratchDirectory('lockdown');
    writeFileSync(join(directory, 'lockdown'), 'none [integrity] confidentiality\n');
    const attributes = await new LockdownAttestor(join(directory, 'lockdown')).attest();
    assert.deepEqual(Object.fromEntries(attributes), { 'kernel.lockdown': { value: 'integrity', attestor: 'kernel' } });
  });
});
