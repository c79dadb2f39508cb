// A lab whose agents get their credentials from an issuer instead of files: the issuer runs on
// the third host (the outsider namespace, no agent there), web and api join with join tokens,
// make their own keys and renew on their own. The issuer's address is excluded on both agents,
// so renewals never depend on the handshake they keep alive. The issuer also attests Kubernetes
// nodes against a test service-account issuer (scripts/lib/oidc-server.ts) on its own loopback,
// whose key the lab holds, so tests can present service-account tokens of every kind.
import { type KeyObject } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { exportJWK } from 'jose';
import { stringify } from 'yaml';
import { createIssuerFixture, type IssuerFixture } from './issuer-fixture.ts';
import { DOMAIN } from './identity-lab.ts';
import { Lab, ROOT, synpassCommand, type AgentHandle, type NetnsProcess } from './lab.ts';
import { scratchDirectory } from './scratch.ts';
import { generateKeyPair } from '../../agent/src/identity/key-generation.ts';

export const ISSUER_PORT = 8443;
const OIDC_PORT = 8080;
const OIDC_PATH = '/sa';
/** The cluster name the lab's issuer gives Kubernetes agents. */
export const LAB_CLUSTER = 'lab';
const OIDC_SERVER = join(ROOT, 'scripts/lib/oidc-server.ts');
const ENROLL_PROBE = join(ROOT, 'scripts/lib/enroll-probe.ts');
const NAMESPACES = ['app', 'host'];

export interface IssuerLabOptions {
  prefix: string;
  net: number;
  /** Credential lifetime the issuer grants. */
  ttlSeconds: number;
  kernel?: boolean;
  /** A server on api (scripts/lib/peer.ts `server`). */
  server: { port: number; kind: 'http' | 'echo'; seconds?: number };
}

export interface IssuerLab {
  lab: Lab;
  directory: string;
  /** The deny list the agents and the issuer watch (empty at start). */
  denyList: string;
  /** Each agent's join token, kept after the agent spent (and deleted) its file. */
  joinTokens: Record<'web' | 'api', string>;
  /** The test service-account issuer: its `iss` and signing key (RS256, kid sa-1). */
  serviceAccountIssuer: string;
  serviceAccountKey: KeyObject;
  fixture: IssuerFixture;
  issuerUrl: string;
  issuer: NetnsProcess;
  api: AgentHandle;
  web: AgentHandle;
  /** Starts the issuer again (after `issuer` was stopped) and resolves once it listens. */
  startIssuer(extraArgs?: string[]): Promise<NetnsProcess>;
  /** One credential request from `host` (scripts/lib/enroll-probe.ts): its status and reason. */
  probe(host: 'web' | 'api', attestation: Record<string, string>, forgedProof?: boolean): Promise<Record<string, unknown>>;
  /** The issuer's refusals so far by reason (its /metrics, read from `host`). */
  refusals(host: 'web' | 'api'): Promise<Record<string, number>>;
  down(): Promise<void>;
}

/** Where the lab puts `agent`'s join token (deleted by the agent once spent). */
export function joinTokenFile(directory: string, agent: string): string {
  return join(directory, `${agent}.join-token`);
}

export async function startIssuerLab(options: IssuerLabOptions): Promise<IssuerLab> {
  const directory = scratchDirectory(options.prefix);
  const lab = Lab.up(`${options.prefix}${process.pid % 100000}`, options.net, options.kernel === undefined ? {} : { kernel: options.kernel });
  const issuerAddress = lab.address('outsider');
  const fixture = await createIssuerFixture(directory, DOMAIN, [issuerAddress]);
  const issuerUrl = `https://${issuerAddress}:${ISSUER_PORT}`;
  const denyList = join(directory, 'deny-list.yaml');
  writeFileSync(denyList, 'credentials: []\nkeys: []\n');
  const serviceAccount = generateKeyPair('rsa2048');
  const jwksFile = join(directory, 'sa-jwks.json');
  writeFileSync(jwksFile, JSON.stringify({ keys: [{ ...(await exportJWK(serviceAccount.publicKey)), kid: 'sa-1', alg: 'RS256', use: 'sig' }] }));
  const serviceAccountIssuer = `http://127.0.0.1:${OIDC_PORT}${OIDC_PATH}`;
  await lab.spawn('outsider', [process.execPath, '--import', 'tsx', OIDC_SERVER, String(OIDC_PORT), OIDC_PATH, jwksFile, '600']).waitFor((line) => line.listening === OIDC_PORT);

  const startIssuer = async (extraArgs: string[] = []): Promise<NetnsProcess> => {
    const issuer = lab.spawn('outsider', [
      ...synpassCommand(), 'issuer', 'run',
      '--domain', DOMAIN,
      '--trust-bundles', fixture.bundles,
      '--issuing-key', fixture.issuingKey,
      '--tls-cert', fixture.tlsCertificate,
      '--tls-key', fixture.tlsKey,
      '--listen', `${issuerAddress}:${ISSUER_PORT}`,
      '--join-tokens', fixture.joinTokens.directory,
      '--ttl-seconds', String(options.ttlSeconds),
      '--deny-list', denyList,
      '--k8s-cluster', LAB_CLUSTER,
      '--k8s-issuer', serviceAccountIssuer,
      ...extraArgs,
    ]);
    await issuer.waitFor((line) => line.msg === 'issuer listening');
    return issuer;
  };
  const issuer = await startIssuer();

  const joinTokens = { web: '', api: '' };
  const agentConfig = (name: 'web' | 'api', tier: string): string => {
    const agentDirectory = join(directory, name);
    const tokenFile = joinTokenFile(directory, name);
    joinTokens[name] = fixture.joinTokens.create({ agent: name, namespaces: NAMESPACES, ttlSeconds: 600, nowSeconds: Math.floor(Date.now() / 1000) }).token;
    writeFileSync(tokenFile, joinTokens[name], { mode: 0o600 });
    const path = join(directory, `${name}.yaml`);
    writeFileSync(path, stringify({
      mode: 'identity',
      policy: { directory: join(ROOT, 'policy/examples/three-tier'), watch: false },
      identity: {
        subject: `spiffe://${DOMAIN}/${name}`,
        credential: join(agentDirectory, 'credential.jwt'),
        signingKey: join(agentDirectory, 'sign.key.pem'),
        keyAgreementKey: join(agentDirectory, 'kex.key.pem'),
        trustBundles: fixture.bundles,
        denyList,
        issuer: { url: issuerUrl, tlsCa: fixture.tlsCertificate, joinToken: tokenFile },
      },
      attestors: { static: { 'app.name': name, 'app.tier': tier }, host: true },
      targets: lab.networks,
      excluded: [`${issuerAddress}/32`],
      // The credential lives seconds here: readiness fails only once it has expired.
      telemetry: { credentialMarginSeconds: 0 },
    }));
    return path;
  };
  const api = await lab.startAgent('api', ['--config', agentConfig('api', 'backend')]);
  const web = await lab.startAgent('web', ['--config', agentConfig('web', 'frontend')]);
  await lab.peer('api', ['server', String(options.server.port), options.server.kind, String(options.server.seconds ?? 120)]).waitFor((l) => l.listening === options.server.port);
  return {
    lab,
    directory,
    denyList,
    joinTokens,
    serviceAccountIssuer,
    serviceAccountKey: serviceAccount.privateKey,
    fixture,
    issuerUrl,
    issuer,
    api,
    web,
    startIssuer,
    probe: async (host, attestation, forgedProof = false) => {
      const child = lab.spawn(host, [process.execPath, '--import', 'tsx', ENROLL_PROBE, issuerUrl, fixture.tlsCertificate, JSON.stringify(attestation), ...(forgedProof ? ['forged-proof'] : [])]);
      const line = await child.waitFor(() => true);
      await child.exited;
      return line;
    },
    refusals: async (host) => {
      const child = lab.spawn(host, [process.execPath, '--import', 'tsx', ENROLL_PROBE, issuerUrl, fixture.tlsCertificate, 'metrics']);
      const { metrics } = (await child.waitFor(() => true)) as { metrics: string };
      await child.exited;
      return Object.fromEntries([...metrics.matchAll(/synpass_issuer_requests_total\{result="refused",reason="([a-z0-9-]+)"\} (\d+)/g)].map((match) => [match[1]!, Number(match[2])]));
    },
    down: async () => {
      await lab.down();
      rmSync(directory, { recursive: true, force: true });
    },
  };
}
