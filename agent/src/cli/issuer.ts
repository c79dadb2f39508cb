// `synpass issuer ...`: the credential issuer (run), its issuing key (keygen) and its join tokens.
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { InvalidArgumentError, type Command } from 'commander';
import type { NodeAttestor } from '../issuer/attestors/attestor.ts';
import { CloudDocumentAttestor } from '../issuer/attestors/cloud-document.ts';
import { KubernetesAttestor, offlineReviewer } from '../issuer/attestors/kubernetes.ts';
import { tokenReviewer } from '../issuer/attestors/token-review.ts';
import { discoveredKeys, fileKeys } from '../issuer/attestors/oidc-keys.ts';
import { JoinTokenAttestor } from '../issuer/attestors/join-token.ts';
import { Issuer } from '../issuer/issuer.ts';
import { createIssuingKey, IssuingKeyError, loadCertifiedIssuingKey } from '../issuer/issuing-key.ts';
import { JoinTokenStore } from '../issuer/join-tokens.ts';
import { startIssuerServer } from '../issuer/server.ts';
import { createLogger } from '../telemetry/log.ts';
import { EMPTY_DENY_LIST, readDenyList, watchDenyList } from '../token/deny-list.ts';
import { loadTrustBundles } from '../token/trust-bundle.ts';
import { integer, namespacesOf } from './arguments.ts';
import { EXIT_NO, guarded } from './exit.ts';

interface RunFlags {
  domain: string;
  trustBundles: string;
  issuingKey: string;
  tlsCert: string;
  tlsKey: string;
  listen: string;
  joinTokens?: string;
  ttlSeconds: number;
  renewalGraceSeconds: number;
  ratePerSource: number;
  denyList?: string;
  nodeNamespaces: string;
  k8sCluster?: string;
  k8sIssuer?: string;
  k8sJwksFile?: string;
  k8sCa?: string;
  k8sBearerTokenFile?: string;
  k8sTokenReview?: string;
  k8sServiceAccount: string[];
  cloudCertificate: string[];
  cloudAccount: string[];
  cloudMaxAgeSeconds?: number;
}

const repeatable = (value: string, previous: string[]): string[] => [...previous, value];

/** The node attestors the flags configure: join tokens, Kubernetes, cloud documents. */
async function nodeAttestors(flags: RunFlags): Promise<NodeAttestor[]> {
  const namespaces = flags.nodeNamespaces.split(',').map((n) => n.trim()).filter(Boolean);
  const attestors: NodeAttestor[] = [];
  if (flags.joinTokens !== undefined) attestors.push(new JoinTokenAttestor(new JoinTokenStore(flags.joinTokens)));
  if (flags.k8sCluster !== undefined) {
    const access = { ca: flags.k8sCa === undefined ? null : readFileSync(flags.k8sCa), bearerTokenFile: flags.k8sBearerTokenFile ?? null };
    let reviewer;
    if (flags.k8sTokenReview !== undefined) reviewer = tokenReviewer(flags.k8sTokenReview, access);
    else if (flags.k8sIssuer === undefined) throw new InvalidArgumentError('--k8s-cluster needs --k8s-issuer (the service-account issuer URL, `iss` of its tokens) or --k8s-token-review');
    else reviewer = offlineReviewer({ issuer: flags.k8sIssuer, keys: flags.k8sJwksFile === undefined ? await discoveredKeys(flags.k8sIssuer, access) : fileKeys(flags.k8sJwksFile) });
    const serviceAccounts = (flags.k8sServiceAccount.length > 0 ? flags.k8sServiceAccount : ['synpass-system/synpass-agent']).map((text) => {
      const [namespace, name, ...rest] = text.split('/');
      if (namespace === undefined || name === undefined || rest.length > 0 || namespace === '' || name === '') throw new InvalidArgumentError(`--k8s-service-account ${text}: expected NAMESPACE/NAME`);
      return { namespace, name };
    });
    attestors.push(new KubernetesAttestor({ cluster: flags.k8sCluster, reviewer, serviceAccounts, namespaces }));
  }
  if (flags.cloudCertificate.length > 0) {
    const certificates = flags.cloudCertificate.map((path) => new X509Certificate(readFileSync(path)));
    attestors.push(new CloudDocumentAttestor({ certificates, accounts: flags.cloudAccount, maxAgeSeconds: flags.cloudMaxAgeSeconds ?? null, namespaces }));
  }
  return attestors;
}

export function registerIssuerCommands(program: Command): void {
  const issuer = program.command('issuer').description('the credential issuer: agents join with an attestation (join token, Kubernetes service-account token, cloud instance document) and renew on their own');

  issuer
    .command('run')
    .description('serve credential requests over HTTPS until SIGINT/SIGTERM (stateless: run several replicas behind one address)')
    .requiredOption('--domain <name>', 'trust domain')
    .requiredOption('--trust-bundles <dir>', "trust bundles; the domain's bundle must certify the issuing key")
    .requiredOption('--issuing-key <file>', 'issuing key (PEM, mode 600), from `synpass issuer keygen`')
    .requiredOption('--tls-cert <file>', 'TLS certificate chain (PEM)')
    .requiredOption('--tls-key <file>', 'TLS private key (PEM)')
    .option('--listen <host:port>', 'address to listen on', '0.0.0.0:8443')
    .option('--join-tokens <dir>', 'join-token directory shared by the replicas (without it, join tokens are refused)')
    .option('--ttl-seconds <n>', 'credential lifetime (at most what is left of the issuing key certificate)', integer(5, 31_622_400), 3600)
    .option('--renewal-grace-seconds <n>', 'how long after expiry a credential may still be renewed by its key', integer(0, 31_622_400), 86_400)
    .option('--deny-list <file>', 'deny list (identity.denyList of the agents): revoked credentials and keys are not renewed; reloaded when it changes')
    .option('--node-namespaces <list>', 'attribute namespaces granted to agents attested by Kubernetes or a cloud document (join tokens carry their own)', 'app,cloud,env,host,k8s,posture,process')
    .option('--k8s-cluster <name>', 'attest Kubernetes nodes by projected service-account tokens; names the cluster in agent names')
    .option('--k8s-issuer <url>', "the cluster's service-account issuer (`iss`); its keys come by OIDC discovery unless --k8s-jwks-file")
    .option('--k8s-jwks-file <file>', 'the service-account issuer keys as a file (kubectl get --raw /openid/v1/jwks)')
    .option('--k8s-ca <file>', "CA of the service-account issuer's TLS certificate, for discovery")
    .option('--k8s-token-review <api server URL>', 'review tokens online with the TokenReview API instead (it knows a deleted pod\'s token is dead; needs system:auth-delegator), with --k8s-ca and --k8s-bearer-token-file')
    .option('--k8s-bearer-token-file <file>', "token sent with discovery requests, where the API server serves its keys to service accounts only (the issuer pod's own token)")
    .option('--k8s-service-account <namespace/name>', 'service account of the agent DaemonSet (repeatable; default synpass-system/synpass-agent)', repeatable, [])
    .option('--cloud-certificate <file>', 'attest cloud instances by identity documents signed by this provider certificate (PEM, repeatable)', repeatable, [])
    .option('--cloud-account <id>', 'an account whose instances may join (repeatable; default any)', repeatable, [])
    .option('--cloud-max-age-seconds <n>', "refuse documents of instances launched longer ago (pendingTime), bounding a stolen document's use", integer(1, 31_622_400))
    .option('--rate-per-source <n>', 'requests a second per source address (IPv6: /64); 0: unlimited', integer(0, 1_000_000), 20)
    .action(guarded('issuer run', async (flags: RunFlags) => {
      const log = createLogger();
      const bundles = loadTrustBundles(flags.trustBundles);
      let loaded;
      try {
        loaded = await loadCertifiedIssuingKey(flags.issuingKey, flags.domain, bundles, Math.floor(Date.now() / 1000));
      } catch (error) {
        if (error instanceof IssuingKeyError) log.child({ component: 'issuer-audit' }).error({ audit: 'refused', reason: error.code, detail: error.message, ...error.context }, 'issuer refuses to start');
        throw error;
      }
      let denyList = flags.denyList === undefined ? EMPTY_DENY_LIST : readDenyList(flags.denyList);
      if (flags.denyList !== undefined) {
        watchDenyList(flags.denyList, (list) => { denyList = list; }, (error) => { log.error({ err: error }, 'deny list refused; the previous one stays in force'); });
      }
      const service = new Issuer({
        trustDomain: flags.domain,
        issuingKey: loaded.key,
        certificate: loaded.certificate,
        bundles,
        attestors: await nodeAttestors(flags),
        ttlSeconds: flags.ttlSeconds,
        renewalGraceSeconds: flags.renewalGraceSeconds,
        denyList: () => denyList,
      });
      const server = await startIssuerServer({ listen: flags.listen, tlsCertificate: flags.tlsCert, tlsKey: flags.tlsKey, ratePerSource: flags.ratePerSource, issuer: service, log });
      log.info({ listen: flags.listen, domain: flags.domain, issuer: loaded.certificate.name, certificateExpiresAt: new Date(loaded.certificate.expiresAt * 1000).toISOString(), ttlSeconds: flags.ttlSeconds }, 'issuer listening');
      const stop = (signal: string): void => {
        log.info({ signal }, 'stopping');
        void server.close().then(() => process.exit(0));
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    }));

  issuer
    .command('keygen')
    .description("make the issuer's issuing key on this host; its public half (issuing.pub.jwk.json) goes to the CA for `synpass keys certify-issuer`")
    .requiredOption('--out <dir>', 'directory for issuing.key.pem and issuing.pub.jwk.json')
    .option('--force', 'replace an existing issuing key')
    .action(guarded('issuer keygen', async (flags: { out: string; force?: boolean }) => {
      const written = await createIssuingKey(flags.out, flags.force === true);
      process.stdout.write(`issuing key ${written.key} (stays here); public key for the CA: ${written.publicKey}\n`);
    }));

  const token = issuer.command('token').description('join tokens: single use, expiring, stored hashed');
  token
    .command('create')
    .description('create a join token for one agent and print it, alone (once: only its hash is stored; `token list` shows id and expiry)')
    .requiredOption('--dir <dir>', 'join-token directory (the issuers\' --join-tokens)')
    .requiredOption('--agent <name>', 'agent name: the credential becomes spiffe://<domain>/agent/join/<name>')
    .option('--for-config <file>', "the agent's configuration: the credential lists every attribute namespace its attestors assert")
    .option('--namespaces <list>', 'attribute namespaces the agent may assert, comma-separated (instead of --for-config)')
    .option('--ttl-minutes <n>', 'how long the token can be used', integer(1, 60 * 24 * 30), 60)
    .action(guarded('issuer token create', (flags: { dir: string; agent: string; forConfig?: string; namespaces?: string; ttlMinutes: number }) => {
      const created = new JoinTokenStore(flags.dir).create({ agent: flags.agent, namespaces: namespacesOf(flags), ttlSeconds: flags.ttlMinutes * 60, nowSeconds: Math.floor(Date.now() / 1000) });
      // Only the token, so it can go straight into a file; `token list` shows the rest.
      process.stdout.write(`${created.token}\n`);
    }));
  token
    .command('list')
    .description('list join tokens (id, agent, expiry, state); never the secrets')
    .requiredOption('--dir <dir>', 'join-token directory')
    .action(guarded('issuer token list', (flags: { dir: string }) => {
      const rows = new JoinTokenStore(flags.dir).list(Math.floor(Date.now() / 1000)).map((row) => ({
        id: row.id,
        agent: row.agent,
        namespaces: row.namespaces,
        state: row.state,
        createdAt: new Date(row.createdAt * 1000).toISOString(),
        expiresAt: new Date(row.expiresAt * 1000).toISOString(),
      }));
      process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
    }));
  token
    .command('revoke')
    .description('revoke a join token by id (exit 1 if there is none)')
    .requiredOption('--dir <dir>', 'join-token directory')
    .argument('<id>', 'token id (the part after "synpass-join.")')
    .action(guarded('issuer token revoke', (id: string, flags: { dir: string }) => {
      if (!new JoinTokenStore(flags.dir).revoke(id)) {
        process.stderr.write(`synpass issuer token revoke: no join token ${id}\n`);
        process.exit(EXIT_NO);
      }
      process.stdout.write(`join token ${id} revoked\n`);
    }));
}
