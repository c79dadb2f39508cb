#!/usr/bin/env node
// synpass command line: the agent itself and the tools around it.
import { Command, InvalidArgumentError, Option } from 'commander';
import { removeAllRules } from '../datapath/iptables.ts';
import { PassThroughHandler } from '../handshake/pass-through.ts';
import { Agent, DEFAULT_AGENT_OPTIONS, type AgentOptions } from '../runtime/agent.ts';
import { createLogger } from '../telemetry/log.ts';
import { fetchStatus } from '../telemetry/status-client.ts';
import { parseCidr } from './cidr.ts';

function integer(min: number, max: number) {
  return (value: string): number => {
    const parsed = Number(value);
    if (!Number.isInteger(parsed) || parsed < min || parsed > max) {
      throw new InvalidArgumentError(`expected an integer from ${min} to ${max}`);
    }
    return parsed;
  };
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
  .description('bind the NFQUEUE queues, install the rules and judge handshakes until SIGINT/SIGTERM')
  .addOption(new Option('--mode <mode>', 'what to do with handshakes').choices(['pass-through']).default('pass-through'))
  .option('--queue <n>', 'first NFQUEUE number', integer(0, 65535), DEFAULT_AGENT_OPTIONS.queueNumber)
  .option('--queue-count <n>', 'queues to balance flows across', integer(1, 64), DEFAULT_AGENT_OPTIONS.queueCount)
  .option('--queue-max-length <n>', 'kernel queue length', integer(1, 1_000_000), DEFAULT_AGENT_OPTIONS.queueMaxLength)
  .option('--fail-open', 'accept packets when the queue is full or the agent is gone (default: drop)', false)
  .option('--mark-base <bit>', 'lowest of the 3 mark bits the agent owns', (v) => Number(v), DEFAULT_AGENT_OPTIONS.markBase)
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
    const options: AgentOptions = {
      ...DEFAULT_AGENT_OPTIONS,
      queueNumber: flags.queue as number,
      queueCount: flags.queueCount as number,
      queueMaxLength: flags.queueMaxLength as number,
      failOpen: flags.failOpen as boolean,
      markBase: flags.markBase as number,
      mtu: flags.mtu as number,
      onMalformed: flags.onMalformed as AgentOptions['onMalformed'],
      targetNetworks: flags.target as string[],
      excludedNetworks: flags.exclude as string[],
      statusSocket: flags.statusSocket as string,
      iptablesBackend: flags.iptables as AgentOptions['iptablesBackend'],
    };
    const runtime = new Agent(options, new PassThroughHandler(), log, flags.mode as string);
    const shutdown = (signal: string): void => {
      log.info({ signal }, 'stopping');
      void runtime.stop().then(() => process.exit(0));
    };
    process.once('SIGINT', shutdown);
    process.once('SIGTERM', shutdown);
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
