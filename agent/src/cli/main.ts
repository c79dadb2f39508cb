#!/usr/bin/env node
// synpass command line: the agent itself and the tools around it.
import { Command, InvalidArgumentError, Option } from 'commander';
import { removeAllRules } from '../datapath/iptables.ts';
import { connectionMarks } from '../datapath/marks.ts';
import { Agent, DEFAULT_AGENT_OPTIONS, type AgentOptions } from '../runtime/agent.ts';
import { loadAgentConfig, passThroughConfig, type AgentConfig } from '../runtime/config.ts';
import { buildHandler, type BuiltHandler } from '../runtime/handlers.ts';
import { createLogger } from '../telemetry/log.ts';
import { fetchStatus } from '../telemetry/status-client.ts';
import { parseCidr } from './cidr.ts';
import { initDomain, issueAgent } from '../identity/issuance.ts';
import { registerPolicyCommands } from './policy.ts';

function integer(min: number, max: number) {
  return (value: string): number => {
    const parsed = Number(value);
    if (!Number.isInteger(parsed) || parsed < min || parsed > max) {
      throw new InvalidArgumentError(`expected an integer from ${min} to ${max}`);
    }
    return parsed;
  };
}

function markBit(value: string): number {
  const bit = Number(value);
  try {
    connectionMarks(bit);
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
  return bit;
}

function collectCidr(value: string, previous: string[]): string[] {
  try {
    return [...previous, parseCidr(value)];
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
}

const program = new Command();
program
  .name('synpass')
  .description('Signed workload identity carried inside the TCP handshake')
  .showHelpAfterError();

const agent = program.command('agent').description('run the host agent, or clean up after one');

agent
  .command('run', { isDefault: true })
  .description('bind the NFQUEUE queues, install the rules and judge handshakes until SIGINT/SIGTERM (SIGHUP reloads identity and policy)')
  .option('--config <file>', 'agent configuration (YAML): identity, workloads, attestors, policy, admission, networks')
  .addOption(new Option('--mode <mode>', 'pass-through attaches a fixed test token (datapath checks only)').choices(['pass-through', 'identity']))
  .option('--queue <n>', 'first NFQUEUE number', integer(0, 65535), DEFAULT_AGENT_OPTIONS.queueNumber)
  .option('--queue-count <n>', 'queues to balance flows across', integer(1, 64), DEFAULT_AGENT_OPTIONS.queueCount)
  .option('--queue-max-length <n>', 'kernel queue length', integer(1, 1_000_000), DEFAULT_AGENT_OPTIONS.queueMaxLength)
  .option('--fail-open', 'accept packets when the queue is full or the agent is gone (default: drop)', false)
  .option('--mark-base <bit>', 'lowest of the 3 mark bits the agent owns (e.g. 0x100000)', markBit, DEFAULT_AGENT_OPTIONS.markBase)
  .option('--mtu <bytes>', 'largest packet the agent may produce', integer(576, 65535), DEFAULT_AGENT_OPTIONS.mtu)
  .addOption(
    new Option('--on-malformed <action>', 'verdict for a queued packet that cannot be parsed')
      .choices(['drop', 'accept'])
      .default('drop'),
  )
  .option('--target <cidr>', 'network that receives tokens (repeatable)', collectCidr, [])
  .option('--exclude <cidr>', 'network the agent never touches (repeatable)', collectCidr, [])
  .addOption(new Option('--iptables <backend>', 'preferred iptables backend (falls back to the other)').choices(['nft', 'legacy']).default('nft'))
  .option('--status-socket <path>', 'unix socket for `synpass status`', DEFAULT_AGENT_OPTIONS.statusSocket)
  .action(async (flags: Record<string, unknown>) => {
    const log = createLogger();
    let config: AgentConfig;
    try {
      config = flags.config === undefined ? passThroughConfig() : loadAgentConfig(flags.config as string);
    } catch (error) {
      log.fatal({ err: error }, 'invalid configuration');
      process.exit(1);
    }
    if (flags.mode !== undefined) config.mode = flags.mode as AgentConfig['mode'];
    const options: AgentOptions = {
      ...DEFAULT_AGENT_OPTIONS,
      queueNumber: flags.queue as number,
      queueCount: flags.queueCount as number,
      queueMaxLength: flags.queueMaxLength as number,
      failOpen: flags.failOpen as boolean,
      markBase: flags.markBase as number,
      mtu: flags.mtu as number,
      onMalformed: flags.onMalformed as AgentOptions['onMalformed'],
      targetNetworks: [...config.targetNetworks, ...(flags.target as string[])],
      excludedNetworks: [...config.excludedNetworks, ...(flags.exclude as string[])],
      statusSocket: flags.statusSocket as string,
      iptablesBackend: flags.iptables as AgentOptions['iptablesBackend'],
    };
    let built: BuiltHandler;
    try {
      built = await buildHandler(config, log);
    } catch (error) {
      log.fatal({ err: error }, 'identity could not be loaded');
      process.exit(1);
    }
    const runtime = new Agent(options, built, log, config.mode);
    const shutdown = (signal: string): void => {
      log.info({ signal }, 'stopping');
      void runtime.stop().then(() => process.exit(0));
    };
    process.once('SIGINT', shutdown);
    process.once('SIGTERM', shutdown);
    process.on('SIGHUP', () => {
      log.info({ signal: 'SIGHUP' }, 'reloading identity');
      void runtime.reload();
    });
    try {
      await runtime.start();
    } catch (error) {
      log.fatal({ err: error }, 'agent failed to start');
      await runtime.stop();
      process.exit(1);
    }
  });

agent
  .command('cleanup')
  .description('remove synpass rules and chains left by an agent that did not stop cleanly')
  .action(async () => {
    const removed = await removeAllRules();
    process.stdout.write(`removed synpass rules from ${removed} table(s)\n`);
  });

const keys = program.command('keys').description('trust domains and agent credentials (offline, on a secure machine)');

keys
  .command('init-domain')
  .description('create a trust domain: a CA key and its trust bundle (JWKS)')
  .requiredOption('--domain <name>', 'trust domain, e.g. prod.example.com')
  .requiredOption('--out <dir>', 'directory for ca.key.pem and <domain>.jwks.json')
  .action(async (flags: { domain: string; out: string }) => {
    const result = await initDomain(flags.domain, flags.out);
    process.stdout.write(`trust domain ${flags.domain}: bundle ${result.bundle}, CA key ${result.caKey} (keep it offline)\n`);
  });

keys
  .command('issue-agent')
  .description("issue an agent credential binding the agent's new signing and key-agreement keys")
  .requiredOption('--domain <name>', 'trust domain')
  .requiredOption('--domain-dir <dir>', 'directory made by init-domain')
  .requiredOption('--agent <id>', 'agent id, becomes spiffe://<domain>/agent/<id>')
  .requiredOption('--namespaces <list>', 'attribute namespaces the agent may assert, comma-separated')
  .option('--ttl-hours <n>', 'credential lifetime in hours', integer(1, 24 * 366), 24)
  .option('--ttl-seconds <n>', 'credential lifetime in seconds (overrides --ttl-hours)', integer(1, 31_622_400))
  .requiredOption('--out <dir>', 'directory for sign.key.pem, kex.key.pem and credential.jwt')
  .action(async (flags: { domain: string; domainDir: string; agent: string; namespaces: string; ttlHours: number; ttlSeconds?: number; out: string }) => {
    const result = await issueAgent({
      domainDirectory: flags.domainDir,
      trustDomain: flags.domain,
      agentId: flags.agent,
      namespaces: flags.namespaces.split(',').map((n) => n.trim()).filter(Boolean),
      ttlSeconds: flags.ttlSeconds ?? flags.ttlHours * 3600,
      outputDirectory: flags.out,
    });
    process.stdout.write(`agent spiffe://${flags.domain}/agent/${flags.agent}: credential ${result.credential}\n`);
  });

registerPolicyCommands(program);

program
  .command('status')
  .description("print the running agent's status as JSON")
  .option('--socket <path>', 'agent status socket', DEFAULT_AGENT_OPTIONS.statusSocket)
  .action(async (flags: { socket: string }) => {
    try {
      process.stdout.write(`${JSON.stringify(await fetchStatus(flags.socket), null, 2)}\n`);
    } catch (error) {
      process.stderr.write(`synpass status: no agent at ${flags.socket}: ${(error as Error).message}\n`);
      process.exit(1);
    }
  });

await program.parseAsync(process.argv);
