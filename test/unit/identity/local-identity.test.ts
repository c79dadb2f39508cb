import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { LocalIdentity } from '../../../agent/src/identity/local-identity.ts';
import { createAgent, createDomain, type TestAgent, type TestDomain } from '../../../scripts/lib/identities.ts';

function load(domain: TestDomain, agent: TestAgent, signingKey = join(agent.directory, 'sign.key.pem')): Promise<LocalIdentity> {
  return LocalIdentity.load({
    files: {
      credential: join(agent.directory, 'credential.jwt'),
      signingKey,
      keyAgreementKey: join(agent.directory, 'kex.key.pem'),
      trustBundles: domain.directory,
    },
    subject: `spiffe://${domain.name}/web`,
    attestors: [],
    tokenTtlSeconds: 600,
  });
}

describe('local identity', () => {
  it('loads an Ed25519 and a P-256 agent, and signs tokens with the matching algorithm', async () => {
    const domain = await createDomain('local.synpass');
    for (const [signingKey, alg] of [
      ['ed25519', 'EdDSA'],
      ['p256', 'ES256'],
    ] as const) {
      const agent = await createAgent(domain, `agent-${signingKey}`, { signingKey });
      const identity = await load(domain, agent);
      const header = JSON.parse(Buffer.from(identity.tokenForOwner(-1).token.split('.')[0]!, 'base64url').toString()) as { alg: string };
      assert.equal(header.alg, alg);
    }
  });

  it('refuses to start with a signing key its credential does not bind', async () => {
    const domain = await createDomain('local.synpass');
    const web = await createAgent(domain, 'web');
    const other = await createAgent(domain, 'other');
    const mixed = join(web.directory, 'other-sign.key.pem');
    copyFileSync(join(other.directory, 'sign.key.pem'), mixed);
    await assert.rejects(load(domain, web, mixed), /identity\.signingKey: \S+other-sign\.key\.pem does not match the public key in \S+credential\.jwt/);
  });
});
