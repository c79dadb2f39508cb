// A lab whose agents get their credentials from an issuer instead of files: the issuer runs on
// the third host (the outsider namespace, no agent there), web and api join with join tokens,
// make their own keys and renew on their own. The issuer's address is excluded on both agents,
// so renewals never depend on the handshake they keep alive.
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { createIssuerFixture, type IssuerFixture } from './issuer-fixture.ts';
import { DOMAIN } from './identity-lab.ts';
import { Lab, ROOT, synpassCommand, type AgentHandle, type NetnsProcess } from './lab.ts';
import { scratchDirectory } from './scratch.ts';

export const ISSUER_PORT = 8443;
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
  fixture: IssuerFixture;
  issuerUrl: string;
  issuer: NetnsProcess;
  api: AgentHandle;
  web: AgentHandle;
  /** Starts the issuer again (after `issuer` was stopped) and resolves once it listens. */
  startIssuer(extraArgs?: string[]): Promise<NetnsProcess>;
  down(): Promise<void>;
}

/** Where the lab puts `agent`'s join token (deleted by the agent once spent). */
export function joinTokenFile(directory: string, agent: string): string {
  return join(directory, `${agent}.join-token`);
}

export async function startIssuerLab(options: IssuerLabOptions): Promise<IssuerLab> {
  const directory = scratchDirectory(options.prefix);
  const lab = Lab.up(`${options.prefix}${process.pid % 100000}`, options.net, { kernel: options.kernel === true });
  const issuerAddress = lab.address('outsider');
  const fixture = await createIssuerFixture(directory, DOMAIN, [issuerAddress]);
  const issuerUrl = `https://${issuerAddress}:${ISSUER_PORT}`;
  const denyList = join(directory, 'deny-list.yaml');
  writeFileSync(denyList, 'credentials: []\nkeys: []\n');

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
      ...extraArgs,
    ]);
    await issuer.waitFor((line) => line.msg === 'issuer listening');
    return issuer;
  };
  const issuer = await startIssuer();

  const agentConfig = (name: string, tier: string): string => {
    const agentDirectory = join(directory, name);
    const tokenFile = joinTokenFile(directory, name);
    writeFileSync(tokenFile, fixture.joinTokens.create({ agent: name, namespaces: NAMESPACES, ttlSeconds: 600, nowSeconds: Math.floor(Date.now() / 1000) }).token, { mode: 0o600 });
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
    fixture,
    issuerUrl,
    issuer,
    api,
    web,
    startIssuer,
    down: async () => {
      await lab.down();
      rmSync(directory, { recursive: true, force: true });
    },
  };
}
