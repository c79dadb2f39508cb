// Keys, credentials and agent configurations for a lab: trust domain demo.synpass with agents
// "web" and "api", and a rogue domain whose agent "mallory" runs on the outsider.
import { copyFileSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { initDomain, issueAgent, type SigningKeyType } from '../../agent/src/identity/issuance.ts';
import { Lab, ROOT, type AgentHandle } from './lab.ts';
import { scratchDirectory } from './scratch.ts';

export const DOMAIN = 'demo.synpass';
export const ROGUE_DOMAIN = 'rogue.example';
/** On web, sockets of this user (nobody) belong to the "batch" workload, which api does not admit. */
export const BATCH_UID = 65534;
/** web's workload named by a cgroup (inside web's, kernel labs only): subject web-reports, admitted by the three-tier policy like web. */
export const REPORTS_WORKLOAD = 'reports';
/** Attribute namespaces every agent of the lab's domain may assert. */
const NAMESPACES = ['app', 'host', 'process'];

export interface IdentityLabFiles {
  directory: string;
  configs: { web: string; api: string; outsider: string };
  agents: { web: string; api: string; outsider: string };
  domainDirectory: string;
}

/** web and api enforce the example three-tier policy (policy/examples/three-tier) unless told otherwise. */
export async function prepareIdentities(
  lab: Lab,
  directory: string,
  policyDirectory = join(ROOT, 'policy/examples/three-tier'),
  caKeyType?: SigningKeyType,
): Promise<IdentityLabFiles> {
  const domainDirectory = join(directory, 'domain');
  const rogueDirectory = join(directory, 'rogue');
  await initDomain(DOMAIN, domainDirectory, { caKeyType });
  await initDomain(ROGUE_DOMAIN, rogueDirectory);
  const bundles = join(directory, 'bundles');
  mkdirSync(bundles, { recursive: true });
  copyFileSync(join(domainDirectory, `${DOMAIN}.jwks.json`), join(bundles, `${DOMAIN}.jwks.json`));
  const rogueBundles = join(directory, 'rogue-bundles');
  mkdirSync(rogueBundles, { recursive: true });
  copyFileSync(join(rogueDirectory, `${ROGUE_DOMAIN}.jwks.json`), join(rogueBundles, `${ROGUE_DOMAIN}.jwks.json`));

  const agents = { web: join(directory, 'web'), api: join(directory, 'api'), outsider: join(directory, 'mallory') };
  await issueAgent({ domainDirectory, trustDomain: DOMAIN, agentId: 'web', namespaces: NAMESPACES, ttlSeconds: 86_400, outputDirectory: agents.web });
  await issueAgent({ domainDirectory, trustDomain: DOMAIN, agentId: 'api', namespaces: NAMESPACES, ttlSeconds: 86_400, outputDirectory: agents.api });
  await issueAgent({
    domainDirectory: rogueDirectory,
    trustDomain: ROGUE_DOMAIN,
    agentId: 'mallory',
    namespaces: NAMESPACES,
    ttlSeconds: 86_400,
    outputDirectory: agents.outsider,
  });

  const config = (agentDirectory: string, domain: string, name: string, tier: string, bundleDirectory: string, admission: object, policy?: string) => ({
    mode: 'identity',
    ...(policy === undefined ? {} : { policy: { directory: policy, watch: true } }),
    identity: {
      subject: `spiffe://${domain}/${name}`,
      credential: join(agentDirectory, 'credential.jwt'),
      signingKey: join(agentDirectory, 'sign.key.pem'),
      keyAgreementKey: join(agentDirectory, 'kex.key.pem'),
      trustBundles: bundleDirectory,
      tokenTtlMinutes: 10,
    },
    attestors: { static: { 'app.name': name, 'app.tier': tier }, host: true },
    admission,
    targets: lab.networks,
  });
  const configs = { web: join(directory, 'web.yaml'), api: join(directory, 'api.yaml'), outsider: join(directory, 'mallory.yaml') };
  writeFileSync(
    configs.web,
    stringify({
      ...config(agents.web, DOMAIN, 'web', 'frontend', bundles, {}, policyDirectory),
      workloads: [
        { name: 'batch', subject: `spiffe://${DOMAIN}/batch`, uids: [BATCH_UID], attributes: { 'app.name': 'batch', 'app.tier': 'batch' } },
        // Named by its cgroup, which only the kernel fast path sees: in kernel labs only.
        ...(lab.options.kernel === true
          ? [{ name: REPORTS_WORKLOAD, subject: `spiffe://${DOMAIN}/web-reports`, cgroups: [lab.workloadCgroup('web', REPORTS_WORKLOAD).path], attributes: { 'app.name': 'web', 'app.tier': 'frontend' } }]
          : []),
      ],
    }),
  );
  writeFileSync(
    configs.api,
    stringify(
      config(agents.api, DOMAIN, 'api', 'backend', bundles, {}, policyDirectory),
    ),
  );
  writeFileSync(configs.outsider, stringify(config(agents.outsider, ROGUE_DOMAIN, 'mallory', 'frontend', rogueBundles, { protectedPorts: [] })));
  return { directory, configs, agents, domainDirectory };
}

/**
 * Issues `agentId` a new credential and new keys in its directory, then has its running agent
 * load them (SIGHUP) and waits until it says so.
 */
export async function rotateAgent(
  files: IdentityLabFiles,
  agentId: 'web' | 'api',
  agent: AgentHandle,
  ttlSeconds = 86_400,
  signingKey: SigningKeyType = 'ed25519',
): Promise<void> {
  await issueAgent({ domainDirectory: files.domainDirectory, trustDomain: DOMAIN, agentId, namespaces: NAMESPACES, ttlSeconds, outputDirectory: files.agents[agentId], signingKey, overwrite: true });
  const mark = agent.process.lines.length;
  agent.process.signal('SIGHUP');
  await agent.process.waitFor((l) => l.msg === 'identity reloaded' && agent.process.lines.indexOf(l) >= mark);
}

export interface IdentityLabOptions {
  /** Lab prefix (1-8 of [a-z0-9]; the process id is appended) and its subnet number. */
  prefix: string;
  net: number;
  /** A policy directory other than the three-tier example. */
  policyDirectory?: string;
  /** Extra `agent run` arguments and environment, per agent. */
  api?: { args?: string[]; env?: Record<string, string> };
  web?: { args?: string[]; env?: Record<string, string> };
  /** A server on api: `server <port> <kind> [seconds]` of scripts/lib/peer.ts (120 s unless told). */
  server: { port: number; kind: 'http' | 'echo'; seconds?: number };
  /** Agents run the kernel fast path (scripts/lib/lab.ts LabOptions.kernel). */
  kernel?: boolean;
}

export interface IdentityLab {
  lab: Lab;
  directory: string;
  files: IdentityLabFiles;
  api: AgentHandle;
  web: AgentHandle;
  /** Stops every process, removes the namespaces and the directory. */
  down(): Promise<void>;
}

/**
 * The lab most end-to-end tests start from: namespaces, a trust domain with web and api agents
 * running (api first, so web's first SYN finds it), and a server on api.
 */
export async function startIdentityLab(options: IdentityLabOptions): Promise<IdentityLab> {
  const directory = scratchDirectory(options.prefix);
  const lab = Lab.up(`${options.prefix}${process.pid % 100000}`, options.net, options.kernel === undefined ? {} : { kernel: options.kernel });
  const files = await prepareIdentities(lab, directory, options.policyDirectory);
  const api = await lab.startAgent('api', ['--config', files.configs.api, ...(options.api?.args ?? [])], options.api?.env);
  const web = await lab.startAgent('web', ['--config', files.configs.web, ...(options.web?.args ?? [])], options.web?.env);
  await lab.peer('api', ['server', String(options.server.port), options.server.kind, String(options.server.seconds ?? 120)]).waitFor((l) => l.listening === options.server.port);
  return {
    lab,
    directory,
    files,
    api,
    web,
    down: async () => {
      await lab.down();
      rmSync(directory, { recursive: true, force: true });
    },
  };
}
