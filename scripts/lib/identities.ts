// In-memory trust domains, agents and tokens for unit tests (no files beyond a temp dir).
import { join } from 'node:path';
import { CompactSign, type CompactJWSHeaderParameters } from 'jose';
import { CA_KEY_FILE, initDomain, issueAgent, type SigningKeyType } from '../../agent/src/identity/issuance.ts';
import { readPrivateKey } from '../../agent/src/identity/key-files.ts';
import { loadTrustBundles, type TrustBundle } from '../../agent/src/token/trust-bundle.ts';
import { verifyCredential, type VerifiedCredential } from '../../agent/src/token/credential.ts';
import { readFileSync } from 'node:fs';
import type { KeyObject } from 'node:crypto';
import { issueIdentityToken, type Attribute } from '../../agent/src/token/identity-token.ts';
import { Admission, type AdmissionConfig } from '../../agent/src/handshake/admission.ts';
import { AdmissionAuthorizer } from '../../agent/src/handshake/authorizer.ts';
import { IdentityHandler } from '../../agent/src/handshake/identity-handler.ts';
import { PeerVerifier } from '../../agent/src/handshake/peer-verifier.ts';
import { StaticAttestor } from '../../agent/src/identity/attestors/static.ts';
import { LocalIdentity, type LocalPods, type WorkloadIdentity } from '../../agent/src/identity/local-identity.ts';
import { scratchDirectory } from './scratch.ts';

export interface TestAgent {
  credentialCompact: string;
  credential: VerifiedCredential;
  signKey: KeyObject;
  kex: KeyObject;
  directory: string;
}

export interface TestDomain {
  name: string;
  directory: string;
  bundles: Map<string, TrustBundle>;
}

export async function createDomain(name: string, caKeyType?: SigningKeyType): Promise<TestDomain> {
  const directory = scratchDirectory(name);
  await initDomain(name, directory, { caKeyType });
  return { name, directory, bundles: loadTrustBundles(directory) };
}

/**
 * The credential `compact` with its claims edited, signed again by the domain's CA under the same
 * header: what a CA that signs whatever it is asked would issue.
 */
export async function reissued(domain: TestDomain, compact: string, edit: (claims: Record<string, unknown>) => Record<string, unknown>): Promise<string> {
  const [header, payload] = compact.split('.') as [string, string];
  const claims = edit(JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Record<string, unknown>);
  const caKey = readPrivateKey(join(domain.directory, CA_KEY_FILE));
  return new CompactSign(Buffer.from(JSON.stringify(claims))).setProtectedHeader(JSON.parse(Buffer.from(header, 'base64url').toString('utf8')) as CompactJWSHeaderParameters).sign(caKey);
}

export async function createAgent(
  domain: TestDomain,
  id: string,
  options: { namespaces?: string[]; ttlSeconds?: number; nowSeconds?: number; signingKey?: SigningKeyType } = {},
): Promise<TestAgent> {
  const directory = join(domain.directory, `agent-${id}`);
  await issueAgent({
    domainDirectory: domain.directory,
    trustDomain: domain.name,
    agentId: id,
    namespaces: options.namespaces ?? ['app', 'host'],
    ttlSeconds: options.ttlSeconds ?? 3600,
    outputDirectory: directory,
    // Each call makes a new agent under this id: fresh keys replace the last ones.
    overwrite: true,
    ...(options.nowSeconds === undefined ? {} : { nowSeconds: options.nowSeconds }),
    ...(options.signingKey === undefined ? {} : { signingKey: options.signingKey }),
  });
  const credentialCompact = readFileSync(join(directory, 'credential.jwt'), 'utf8').trim();
  const issuedAt = options.nowSeconds ?? Math.floor(Date.now() / 1000);
  return {
    credentialCompact,
    credential: verifyCredential(credentialCompact, domain.bundles, issuedAt),
    signKey: readPrivateKey(join(directory, 'sign.key.pem')),
    kex: readPrivateKey(join(directory, 'kex.key.pem')),
    directory,
  };
}

export function attributes(values: Record<string, string>, attestor = 'static'): Map<string, Attribute> {
  return new Map(Object.entries(values).map(([name, value]) => [name, { value, attestor }]));
}

export async function tokenFor(
  agent: TestAgent,
  subject: string,
  values: Record<string, string> = { 'app.name': 'web' },
  options: { nowSeconds?: number; ttlSeconds?: number } = {},
): Promise<string> {
  return issueIdentityToken({
    signKey: agent.signKey,
    credential: agent.credential,
    subject,
    attributes: attributes(values),
    ttlSeconds: options.ttlSeconds ?? 600,
    nowSeconds: options.nowSeconds ?? Math.floor(Date.now() / 1000),
  });
}

export interface HandlerOptions {
  attributes: Record<string, string>;
  admission: AdmissionConfig;
  workloads?: WorkloadIdentity[];
  clock?: () => number;
  namespaces?: string[];
  /** Flow and nonce table sizes. */
  capacity?: number;
  /** First-contact signature checks per second per source; unlimited unless given. */
  signatureChecksPerSource?: number;
  signingKey?: SigningKeyType;
  /** Workloads known by address, as a Kubernetes node's pods. */
  localPods?: LocalPods;
  /** Whether an address is in the target networks (absent: every address is). */
  isTarget?: (address: string) => boolean;
}

/** A real IdentityHandler for agent `id` of `domain`, as the agent builds it (no kernel). */
export async function identityHandler(domain: TestDomain, id: string, options: HandlerOptions) {
  const created = await createAgent(domain, id, {
    ...(options.namespaces === undefined ? {} : { namespaces: options.namespaces }),
    ...(options.signingKey === undefined ? {} : { signingKey: options.signingKey }),
  });
  const local = await LocalIdentity.load({
    files: {
      credential: join(created.directory, 'credential.jwt'),
      signingKey: join(created.directory, 'sign.key.pem'),
      keyAgreementKey: join(created.directory, 'kex.key.pem'),
      trustBundles: domain.directory,
    },
    subject: `spiffe://${domain.name}/${id}`,
    attestors: [new StaticAttestor(options.attributes)],
    workloads: options.workloads ?? [],
    tokenTtlSeconds: 600,
  });
  return handlerFor(local, options);
}

/** The handler an agent with identity `local` builds, as if it started again with the same keys. */
export function handlerFor(local: LocalIdentity, options: HandlerOptions) {
  const clock = options.clock ?? Date.now;
  const verifier = new PeerVerifier(local.bundles, { kex: local.kex, kexRaw: local.kexRaw }, () => Math.floor(clock() / 1000));
  const handler = new IdentityHandler(local, verifier, new AdmissionAuthorizer(new Admission(options.admission)), {
    replayWindowSeconds: 30,
    handshakeTimeoutMs: 30_000,
    maxFlows: options.capacity ?? 1000,
    maxNonces: options.capacity ?? 1000,
    signatureChecksPerSource: options.signatureChecksPerSource ?? 0,
    now: clock,
    ...(options.localPods === undefined ? {} : { localPods: options.localPods }),
    ...(options.isTarget === undefined ? {} : { isTarget: options.isTarget }),
  });
  return { handler, verifier, local };
}
