// Kubernetes and cloud node attestation through the issuer's HTTPS edge: a test OIDC server
// serves the service-account issuer's keys (discovery, then JWKS), and a provider certificate
// made here signs instance documents. Each refusal is counted and audited with its reason.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createPrivateKey, sign, X509Certificate, type KeyObject } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { exportJWK, SignJWT } from 'jose';
import { CloudDocumentAttestor } from '../../../agent/src/issuer/attestors/cloud-document.ts';
import { KubernetesAttestor, offlineReviewer } from '../../../agent/src/issuer/attestors/kubernetes.ts';
import { discoveredKeys } from '../../../agent/src/issuer/attestors/oidc-keys.ts';
import { tokenReviewer } from '../../../agent/src/issuer/attestors/token-review.ts';
import { CredentialRenewer } from '../../../agent/src/issuer/enrollment.ts';
import { Issuer } from '../../../agent/src/issuer/issuer.ts';
import { loadCertifiedIssuingKey } from '../../../agent/src/issuer/issuing-key.ts';
import { startIssuerServer, type IssuerServer } from '../../../agent/src/issuer/server.ts';
import { createAgentLog } from '../../../agent/src/telemetry/log.ts';
import { verifyCredential } from '../../../agent/src/token/credential.ts';
import { loadTrustBundles } from '../../../agent/src/token/trust-bundle.ts';
import { createIssuerFixture, type IssuerFixture } from '../../../scripts/lib/issuer-fixture.ts';
import { scratchDirectory } from '../../../scripts/lib/scratch.ts';
import { generateKeyPair } from '../../../agent/src/identity/key-generation.ts';

const DOMAIN = 'nodes.synpass';
const SA_ISSUER_PATH = '/sa-issuer';
const now = (): number => Math.floor(Date.now() / 1000);

interface Claims {
  audience?: string;
  namespace?: string;
  serviceAccount?: string;
  node?: string | null;
  expiresIn?: number;
  key?: KeyObject;
  kid?: string;
}

describe('node attestors', () => {
  let fixture: IssuerFixture;
  let server: IssuerServer;
  let oidc: Server;
  let saIssuer: string;
  let url: string;
  let providerKey: KeyObject;
  const saKey = generateKeyPair('rsa2048');
  const strangerKey = generateKeyPair('rsa2048');
  const audits: Record<string, unknown>[] = [];
  const { log } = createAgentLog('info', {
    write: (line: string) => { const record = JSON.parse(line) as Record<string, unknown>; if (record.audit !== undefined) audits.push(record); return true; },
    on: () => undefined,
    flushSync: () => undefined,
  });

  const serviceAccountToken = (claims: Claims = {}): Promise<string> =>
    new SignJWT({
      'kubernetes.io': {
        namespace: claims.namespace ?? 'synpass',
        serviceaccount: { name: claims.serviceAccount ?? 'synpass-agent', uid: 'u1' },
        ...(claims.node === null ? {} : { pod: { name: 'synpass-agent-x7k2p', uid: 'u2' }, node: { name: claims.node ?? 'node-a', uid: 'u3' } }),
      },
    })
      .setProtectedHeader({ alg: 'RS256', kid: claims.kid ?? 'sa-1' })
      .setIssuer(saIssuer)
      .setAudience(claims.audience ?? 'synpass')
      .setSubject(`system:serviceaccount:${claims.namespace ?? 'synpass'}:${claims.serviceAccount ?? 'synpass-agent'}`)
      .setIssuedAt(now() - 60)
      .setExpirationTime(now() + (claims.expiresIn ?? 600))
      .sign(claims.key ?? saKey.privateKey);

  const agentFiles = (name: string) => {
    const directory = scratchDirectory(`attest-${name}`);
    return { directory, files: { credential: join(directory, 'credential.jwt'), signingKey: join(directory, 'sign.key.pem'), keyAgreementKey: join(directory, 'kex.key.pem'), trustBundles: fixture.bundles } };
  };
  const join_ = async (name: string, evidence: { kubernetesToken?: string; cloudDocument?: string; cloudSignature?: string }) => {
    const { directory, files } = agentFiles(name);
    const write = (file: string, content: string | undefined): string | null => {
      if (content === undefined) return null;
      writeFileSync(join(directory, file), content);
      return join(directory, file);
    };
    const renewer = new CredentialRenewer({
      issuerUrl: url,
      tlsCa: fixture.tlsCertificate,
      evidence: { joinToken: null, kubernetesToken: write('sa-token', evidence.kubernetesToken), cloudDocument: write('document.json', evidence.cloudDocument), cloudSignature: write('signature', evidence.cloudSignature) },
      files,
      log,
    });
    await renewer.ensureCredential();
    return verifyCredential(readFileSync(files.credential, 'utf8').trim(), loadTrustBundles(fixture.bundles), now());
  };
  const refusedWith = async (reason: string, evidence: Parameters<typeof join_>[1]): Promise<void> => {
    const before = count(await server.registry.metrics(), reason);
    await assert.rejects(join_('refused', evidence), (error: unknown) => (error as { context?: { reason?: string } }).context?.reason === reason, reason);
    assert.equal(count(await server.registry.metrics(), reason), before + 1, `${reason} is counted`);
    assert.equal(audits.at(-1)?.reason, reason, `${reason} is audited`);
  };
  const count = (text: string, reason: string): number => Number(new RegExp(`result="refused",reason="${reason}"\\} (\\d+)`).exec(text)?.[1] ?? Number.NaN);

  const instanceDocument = (fields: Record<string, string> = {}): { cloudDocument: string; cloudSignature: string } => {
    const document = JSON.stringify({ instanceId: 'i-0abc123', accountId: '123456789012', region: 'eu-west-1', availabilityZone: 'eu-west-1a', pendingTime: new Date().toISOString(), ...fields }, null, 2);
    return { cloudDocument: document, cloudSignature: sign('sha256', Buffer.from(document), providerKey).toString('base64') };
  };

  before(async () => {
    const directory = scratchDirectory('attestors');
    fixture = await createIssuerFixture(directory, DOMAIN, ['127.0.0.1']);
    // The service-account issuer: OIDC discovery, then its JWKS.
    const jwk = { ...(await exportJWK(saKey.publicKey)), kid: 'sa-1', alg: 'RS256', use: 'sig' };
    oidc = createServer((request, response) => {
      response.setHeader('content-type', 'application/json');
      if (request.url === `${SA_ISSUER_PATH}/.well-known/openid-configuration`) response.end(JSON.stringify({ issuer: saIssuer, jwks_uri: `${saIssuer}/openid/v1/jwks` }));
      else if (request.url === `${SA_ISSUER_PATH}/openid/v1/jwks`) response.end(JSON.stringify({ keys: [jwk] }));
      else response.writeHead(404).end('{}');
    });
    await new Promise<void>((resolve) => oidc.listen(0, '127.0.0.1', resolve));
    saIssuer = `http://127.0.0.1:${(oidc.address() as { port: number }).port}${SA_ISSUER_PATH}`;
    // The cloud provider's signing certificate, made here.
    const providerKeyFile = join(directory, 'provider.key');
    const providerCertificate = join(directory, 'provider.crt');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=test cloud provider', '-keyout', providerKeyFile, '-out', providerCertificate], { stdio: 'ignore' });
    providerKey = createPrivateKey(readFileSync(providerKeyFile));

    const bundles = loadTrustBundles(fixture.bundles);
    const loaded = await loadCertifiedIssuingKey(fixture.issuingKey, DOMAIN, bundles, now());
    const issuer = new Issuer({
      trustDomain: DOMAIN,
      issuingKey: loaded.key,
      certificate: loaded.certificate,
      bundles,
      ttlSeconds: 600,
      renewalGraceSeconds: 0,
      attestors: [
        new KubernetesAttestor({ cluster: 'prod-eu', reviewer: offlineReviewer({ issuer: saIssuer, keys: await discoveredKeys(saIssuer, { ca: null, bearerTokenFile: null }) }), serviceAccounts: [{ namespace: 'synpass', name: 'synpass-agent' }], namespaces: ['app', 'k8s'] }),
        new CloudDocumentAttestor({ certificates: [new X509Certificate(readFileSync(providerCertificate))], accounts: ['123456789012'], maxAgeSeconds: 600, namespaces: ['app', 'cloud'] }),
      ],
    });
    server = await startIssuerServer({ listen: '127.0.0.1:0', tlsCertificate: fixture.tlsCertificate, tlsKey: fixture.tlsKey, ratePerSource: 0, issuer, log });
    url = `https://127.0.0.1:${(server.server.address() as { port: number }).port}`;
  });
  after(async () => {
    await server.close();
    oidc.close();
  });

  it('a projected service-account token names the credential after the node, with node.* facts', async () => {
    const credential = await join_('k8s', { kubernetesToken: await serviceAccountToken() });
    assert.equal(credential.subject, `spiffe://${DOMAIN}/agent/k8s/prod-eu/node-a`);
    assert.deepEqual(credential.node, { 'node.name': 'node-a', 'node.k8s-cluster': 'prod-eu', 'node.k8s-pod': 'synpass-agent-x7k2p', 'node.k8s-namespace': 'synpass' });
    assert.equal(credential.attestedBy, 'kubernetes');
    assert.deepEqual([...credential.namespaces], ['app', 'k8s']);
  });

  it('refuses a service-account token with the wrong audience, expired, of another namespace or account, by an unknown key, or without a node', async () => {
    await refusedWith('k8s-wrong-audience', { kubernetesToken: await serviceAccountToken({ audience: 'vault' }) });
    await refusedWith('k8s-expired', { kubernetesToken: await serviceAccountToken({ expiresIn: -120 }) });
    await refusedWith('k8s-wrong-service-account', { kubernetesToken: await serviceAccountToken({ namespace: 'default' }) });
    await refusedWith('k8s-wrong-service-account', { kubernetesToken: await serviceAccountToken({ serviceAccount: 'builder' }) });
    await refusedWith('k8s-unknown-key', { kubernetesToken: await serviceAccountToken({ key: strangerKey.privateKey, kid: 'sa-2' }) });
    await refusedWith('k8s-bad-signature', { kubernetesToken: await serviceAccountToken({ key: strangerKey.privateKey }) });
    await refusedWith('k8s-no-node', { kubernetesToken: await serviceAccountToken({ node: null }) });
    await refusedWith('k8s-bad-token', { kubernetesToken: 'not.a.jwt' });
  });

  it('an instance document signed by the provider names the credential after the instance', async () => {
    const credential = await join_('cloud', instanceDocument());
    assert.equal(credential.subject, `spiffe://${DOMAIN}/agent/cloud/123456789012/i-0abc123`);
    assert.equal(credential.node['node.cloud-region'], 'eu-west-1');
    assert.equal(credential.attestedBy, 'cloud-document');
  });

  it('refuses a forged or altered document, another account and a document older than allowed', async () => {
    const good = instanceDocument();
    await refusedWith('cloud-bad-signature', { ...good, cloudDocument: good.cloudDocument.replace('i-0abc123', 'i-0evil00') });
    const selfSigned = generateKeyPair('rsa2048');
    await refusedWith('cloud-bad-signature', { ...good, cloudSignature: sign('sha256', Buffer.from(good.cloudDocument), selfSigned.privateKey).toString('base64') });
    await refusedWith('cloud-wrong-account', instanceDocument({ accountId: '999999999999' }));
    await refusedWith('cloud-document-too-old', instanceDocument({ pendingTime: new Date(Date.now() - 3_600_000).toISOString() }));
  });
});

describe('Kubernetes attestation through TokenReview', () => {
  let api: Server;
  let apiServer: string;
  const issuerToken = join(scratchDirectory('token-review'), 'token');
  writeFileSync(issuerToken, 'issuer-own-token\n');
  const reviews: { authorization: string | undefined; token: string; audiences: string[] }[] = [];
  // What the API server knows: a live agent pod's token, one of a deleted pod, one of another account.
  const known: Record<string, { status: Record<string, unknown> }> = {
    live: { status: { authenticated: true, audiences: ['synpass'], user: { username: 'system:serviceaccount:synpass-system:synpass-agent', extra: { 'authentication.kubernetes.io/pod-name': ['synpass-agent-q2w8r'], 'authentication.kubernetes.io/node-name': ['node-b'] } } } },
    'deleted-pod': { status: { authenticated: false, error: 'pod "synpass-agent-old" not found' } },
    'other-account': { status: { authenticated: true, audiences: ['synpass'], user: { username: 'system:serviceaccount:ci:builder', extra: { 'authentication.kubernetes.io/pod-name': ['b'], 'authentication.kubernetes.io/node-name': ['node-b'] } } } },
    'other-audience': { status: { authenticated: true, audiences: ['vault'], user: { username: 'system:serviceaccount:synpass-system:synpass-agent' } } },
  };

  before(async () => {
    api = createServer((request, response) => {
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('end', () => {
        const review = JSON.parse(Buffer.concat(chunks).toString()) as { kind: string; spec: { token: string; audiences: string[] } };
        reviews.push({ authorization: request.headers.authorization, token: review.spec.token, audiences: review.spec.audiences });
        response.writeHead(request.url === '/apis/authentication.k8s.io/v1/tokenreviews' && review.kind === 'TokenReview' ? 201 : 404, { 'content-type': 'application/json' });
        response.end(JSON.stringify({ kind: 'TokenReview', ...(known[review.spec.token] ?? { status: { authenticated: false, error: 'invalid bearer token' } }) }));
      });
    });
    await new Promise<void>((resolve) => api.listen(0, '127.0.0.1', resolve));
    apiServer = `http://127.0.0.1:${(api.address() as { port: number }).port}`;
  });
  after(() => { api.close(); });

  it('names the credential after the node the API server says, and refuses a dead pod\'s token, another account and another audience', async () => {
    const attestor = new KubernetesAttestor({
      cluster: 'prod-eu',
      reviewer: tokenReviewer(apiServer, { ca: null, bearerTokenFile: issuerToken }),
      serviceAccounts: [{ namespace: 'synpass-system', name: 'synpass-agent' }],
      namespaces: ['app'],
    });
    const grant = await attestor.attest({ token: 'live' });
    assert.equal(grant.agentId, 'k8s/prod-eu/node-b');
    assert.equal(grant.node['node.k8s-pod'], 'synpass-agent-q2w8r');
    assert.deepEqual(reviews[0], { authorization: 'Bearer issuer-own-token', token: 'live', audiences: ['synpass'] });
    const reasonOf = (token: string) => attestor.attest({ token }).then(() => 'issued', (error: unknown) => (error as { code: string }).code);
    assert.equal(await reasonOf('deleted-pod'), 'k8s-bad-token');
    assert.equal(await reasonOf('other-account'), 'k8s-wrong-service-account');
    assert.equal(await reasonOf('other-audience'), 'k8s-wrong-audience');
    const unreachable = new KubernetesAttestor({ cluster: 'prod-eu', reviewer: tokenReviewer('http://127.0.0.1:1', { ca: null, bearerTokenFile: null }), serviceAccounts: [], namespaces: [] });
    assert.equal(await unreachable.attest({ token: 'live' }).then(() => 'issued', (error: unknown) => (error as { code: string }).code), 'k8s-keys-unavailable');
  });
});
