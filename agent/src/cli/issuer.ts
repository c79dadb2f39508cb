// `synpass issuer ...`: the credential issuer (run), its issuing key (keygen) and its join tokens.
import type { Command } from 'commander';
import { Issuer } from '../issuer/issuer.ts';
import { createIssuingKey, IssuingKeyError, loadCertifiedIssuingKey } from '../issuer/issuing-key.ts';
import { JoinTokenStore } from '../issuer/join-tokens.ts';
import { startIssuerServer } from '../issuer/server.ts';
import { createLogger } from '../telemetry/log.ts';
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
}

export function registerIssuerCommands(program: Command): void {
  const issuer = program.command('issuer').description('the credential issuer: agents join with a join token and renew on their own');

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
      const service = new Issuer({
        trustDomain: flags.domain,
        issuingKey: loaded.key,
        certificate: loaded.certificate,
        bundles,
        joinTokens: flags.joinTokens === undefined ? null : new JoinTokenStore(flags.joinTokens),
        ttlSeconds: flags.ttlSeconds,
        renewalGraceSeconds: flags.renewalGraceSeconds,
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
    .description('create a join token for one agent and print it (once: only its hash is stored)')
    .requiredOption('--dir <dir>', 'join-token directory (the issuers\' --join-tokens)')
    .requiredOption('--agent <name>', 'agent name: the credential becomes spiffe://<domain>/agent/join/<name>')
    .option('--for-config <file>', "the agent's configuration: the credential lists every attribute namespace its attestors assert")
    .option('--namespaces <list>', 'attribute namespaces the agent may assert, comma-separated (instead of --for-config)')
    .option('--ttl-minutes <n>', 'how long the token can be used', integer(1, 60 * 24 * 30), 60)
    .action(guarded('issuer token create', (flags: { dir: string; agent: string; forConfig?: string; namespaces?: string; ttlMinutes: number }) => {
      const created = new JoinTokenStore(flags.dir).create({ agent: flags.agent, namespaces: namespacesOf(flags), ttlSeconds: flags.ttlMinutes * 60, nowSeconds: Math.floor(Date.now() / 1000) });
      process.stdout.write(`${created.token}\n`);
      process.stderr.write(`join token ${created.record.id} for agent ${flags.agent}, expires ${new Date(created.record.expiresAt * 1000).toISOString()}\n`);
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
