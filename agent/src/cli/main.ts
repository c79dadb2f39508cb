#!/usr/bin/env node
// synpass command line: the agent itself and the tools around it.
import { Command, Option } from 'commander';
import { removeAllRules } from '../datapath/iptables.ts';
import { DEFAULT_DATAPATH, DEFAULT_TELEMETRY } from '../runtime/config.ts';
import { AgentNotRunningError, fetchStatus, waitUntilRunning } from '../telemetry/status-client.ts';
import { askWhois } from '../whois/client.ts';
import { inspectCredential, readCredentialFile } from '../token/credential.ts';
import { certifyIssuerKey, initDomain, issueAgent, SIGNING_KEY_TYPES, type SigningKeyType } from '../identity/issuance.ts';
import { loadTrustBundles } from '../token/trust-bundle.ts';
import { KernelFastPath } from '../kernel/fast-path.ts';
import { registerAgentRun } from './agent-run.ts';
import { integer, namespacesOf } from './arguments.ts';
import { EXIT_NO, EXIT_USAGE, guarded } from './exit.ts';
import { registerIssuerCommands } from './issuer.ts';
import { registerPolicyCommands } from './policy.ts';
import { packageVersion } from './version.ts';

const program = new Command();
program
  .name('synpass')
  .description('Signed workload identity carried inside the TCP handshake')
  .version(packageVersion(), '-V, --version', 'print the version')
  .showHelpAfterError()
  // Commander's own usage errors end like ours: exit 2; --help and --version exit 0.
  .exitOverride((error) => process.exit(error.exitCode === 0 ? 0 : EXIT_USAGE));

const agent = program.command('agent').description('run the host agent, wait until it runs, or clean up after one');

registerAgentRun(agent);

agent
  .command('cleanup')
  .description('remove synpass rules and chains (iptables, and the nftables table inet synpass), and the kernel fast path (tc programs, cgroup link, pinned maps), left by an agent that did not stop cleanly or kept its fast path at stop (datapath.fastPathKeepSeconds)')
  .option('--fast-path-pin-dir <path>', 'bpffs directory of the fast path (datapath.fastPathPinDir)', DEFAULT_DATAPATH.fastPathPinDir)
  .action(guarded('agent cleanup', async (flags: { fastPathPinDir: string }) => {
    const removed = await removeAllRules();
    process.stdout.write(`removed synpass rules from ${removed} table(s)\n`);
    const fast = KernelFastPath.detach(flags.fastPathPinDir);
    process.stdout.write(`kernel fast path: ${fast.tcDetached} tc program(s) detached, cgroup link ${fast.linkDetached ? 'detached' : 'not found'}, pins under ${flags.fastPathPinDir} removed\n`);
  }));

agent
  .command('wait')
  .description("wait until the agent at the status socket runs, its rules (and its kernel fast path, where that runs) in place: the systemd unit counts as started only then, so a service ordered after it listens behind them; exit 1 if it is not running within the timeout")
  .option('--socket <path>', 'agent status socket', DEFAULT_DATAPATH.statusSocket)
  .option('--timeout <seconds>', 'how long to wait', integer(1, 3600), 60)
  .action(guarded('agent wait', async (flags: { socket: string; timeout: number }) => {
    try {
      const milliseconds = await waitUntilRunning(flags.socket, flags.timeout * 1000);
      process.stdout.write(`agent running (waited ${(milliseconds / 1000).toFixed(1)} s)\n`);
    } catch (error) {
      if (!(error instanceof AgentNotRunningError)) throw error;
      process.stderr.write(`synpass agent wait: ${error.message}\n`);
      process.exit(EXIT_NO);
    }
  }));

const keys = program.command('keys').description('trust domains and agent credentials (offline, on a secure machine)');

keys
  .command('init-domain')
  .description('create a trust domain: a CA key and its trust bundle (JWKS); refuses to replace an existing one')
  .requiredOption('--domain <name>', 'trust domain, e.g. prod.example.com')
  .requiredOption('--out <dir>', 'directory for ca.key.pem and <domain>.jwks.json')
  .option('--force', 'replace an existing CA key and bundle (every credential it issued stops verifying)')
  .addOption(new Option('--ca-key <type>', 'CA key type; peers accept both, ed25519 makes verifying the credentials it signs cheaper').choices(SIGNING_KEY_TYPES).default('ed25519'))
  .action(guarded('keys init-domain', async (flags: { domain: string; out: string; force?: boolean; caKey: SigningKeyType }) => {
    const result = await initDomain(flags.domain, flags.out, { overwrite: flags.force === true, caKeyType: flags.caKey });
    process.stdout.write(`trust domain ${flags.domain}: bundle ${result.bundle}, ${flags.caKey} CA key ${result.caKey} (keep it offline)\n`);
  }));

keys
  .command('issue-agent')
  .description("issue an agent credential binding the agent's new signing and key-agreement keys; refuses to replace existing ones")
  .requiredOption('--domain <name>', 'trust domain')
  .requiredOption('--domain-dir <dir>', 'directory made by init-domain')
  .requiredOption('--agent <id>', 'agent id, becomes spiffe://<domain>/agent/<id>')
  .option('--for-config <file>', "the agent's configuration: the credential lists every attribute namespace its attestors assert")
  .option('--namespaces <list>', 'attribute namespaces the agent may assert, comma-separated (instead of --for-config)')
  .option('--ttl-hours <n>', 'credential lifetime in hours', integer(1, 24 * 366), 24)
  .option('--ttl-seconds <n>', 'credential lifetime in seconds (overrides --ttl-hours)', integer(1, 31_622_400))
  .requiredOption('--out <dir>', 'directory for sign.key.pem, kex.key.pem and credential.jwt')
  .option('--force', 'replace keys and credential already in --out')
  .addOption(new Option('--signing-key <type>', 'signing key type; peers accept both, ed25519 makes first contact cheaper').choices(SIGNING_KEY_TYPES).default('ed25519'))
  .action(
    guarded(
      'keys issue-agent',
      async (flags: { domain: string; domainDir: string; agent: string; forConfig?: string; namespaces?: string; ttlHours: number; ttlSeconds?: number; out: string; force?: boolean; signingKey: SigningKeyType }) => {
        const namespaces = namespacesOf(flags);
        const result = await issueAgent({
          signingKey: flags.signingKey,
          domainDirectory: flags.domainDir,
          trustDomain: flags.domain,
          agentId: flags.agent,
          namespaces,
          ttlSeconds: flags.ttlSeconds ?? flags.ttlHours * 3600,
          outputDirectory: flags.out,
          overwrite: flags.force === true,
        });
        process.stdout.write(`agent spiffe://${flags.domain}/agent/${flags.agent}: credential ${result.credential} (namespaces: ${namespaces.join(', ') || 'none'})\n`);
      },
    ),
  );

keys
  .command('certify-issuer')
  .description("certify an issuer's issuing key: its certificate joins the domain's trust bundle, which then goes to every agent")
  .requiredOption('--domain <name>', 'trust domain')
  .requiredOption('--domain-dir <dir>', 'directory made by init-domain')
  .requiredOption('--name <issuer>', 'issuer name, becomes spiffe://<domain>/issuer/<name>')
  .requiredOption('--public-key <file>', 'issuing.pub.jwk.json from `synpass issuer keygen`')
  .option('--ttl-days <n>', 'certificate lifetime in days (credentials it signs never outlive it)', integer(1, 366), 30)
  .option('--ttl-seconds <n>', 'certificate lifetime in seconds (overrides --ttl-days)', integer(60, 31_622_400))
  .action(guarded('keys certify-issuer', async (flags: { domain: string; domainDir: string; name: string; publicKey: string; ttlDays: number; ttlSeconds?: number }) => {
    const result = await certifyIssuerKey({
      domainDirectory: flags.domainDir,
      trustDomain: flags.domain,
      name: flags.name,
      publicKeyFile: flags.publicKey,
      ttlSeconds: flags.ttlSeconds ?? flags.ttlDays * 86_400,
    });
    process.stdout.write(`issuer ${flags.name} certified until ${new Date(result.expiresAt * 1000).toISOString()} in ${result.bundle}: distribute the bundle before the issuer starts\n`);
  }));

keys
  .command('inspect')
  .description('print an agent credential: subject, signing key type, namespaces, expiry, and whether trust bundles verify it (exit 1 if they do not)')
  .argument('<credential>', 'credential.jwt')
  .option('--bundles <dir>', 'directory of trust bundles to verify against, as a peer would')
  .action(guarded('keys inspect', (path: string, flags: { bundles?: string }) => {
    const bundles = flags.bundles === undefined ? null : loadTrustBundles(flags.bundles);
    const report = inspectCredential(readCredentialFile(path), bundles, Math.floor(Date.now() / 1000));
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    if (bundles !== null && !report.verified) process.exit(EXIT_NO);
  }));

registerPolicyCommands(program);
registerIssuerCommands(program);

program
  .command('whois')
  .description('the verified identity of the peer of one of your connections (both ends, either order)')
  .argument('<one-end>', 'ADDRESS:PORT of one end')
  .argument('<other-end>', 'ADDRESS:PORT of the other end')
  .option('--socket <path>', 'agent peer-identity socket', DEFAULT_TELEMETRY.whoisSocket ?? '/run/synpass/whois.sock')
  .action(async (a: string, b: string, flags: { socket: string }) => {
    try {
      const answer = await askWhois(flags.socket, a, b);
      process.stdout.write(`${JSON.stringify(answer, null, 2)}\n`);
      if (!('found' in answer)) process.exit(answer.error === 'forbidden' ? 3 : 2);
    } catch (error) {
      process.stderr.write(`synpass whois: no agent at ${flags.socket}: ${(error as Error).message}\n`);
      process.exit(1);
    }
  });

program
  .command('status')
  .description("print the running agent's status as JSON")
  .option('--socket <path>', 'agent status socket', DEFAULT_DATAPATH.statusSocket)
  .action(async (flags: { socket: string }) => {
    try {
      process.stdout.write(`${JSON.stringify(await fetchStatus(flags.socket), null, 2)}\n`);
    } catch (error) {
      process.stderr.write(`synpass status: no agent at ${flags.socket}: ${(error as Error).message}\n`);
      process.exit(1);
    }
  });

await program.parseAsync(process.argv);
