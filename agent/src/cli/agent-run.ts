// `synpass agent run`: the host agent. Its flags set configuration fields by path and win over
// the environment (SYNPASS_...), which wins over the file; all three go through one schema, so a
// flag is validated, and its error worded, as the field it sets.
import type { Command } from 'commander';
import { Agent } from '../runtime/agent.ts';
import { configFields, loadAgentConfig, type AgentConfig, type ConfigField, type Override } from '../runtime/config.ts';
import { buildHandler, EnrollmentPending, type BuiltHandler } from '../runtime/handlers.ts';
import { createAgentLog } from '../telemetry/log.ts';
import { failWith } from './exit.ts';

/** A flag of `agent run` and the field it sets; `append` adds to the field's list. */
interface FieldFlag {
  flag: string;
  path: string;
  append?: boolean;
}

const FIELD_FLAGS: readonly FieldFlag[] = [
  { flag: '--mode <mode>', path: 'mode' },
  { flag: '--queue <n>', path: 'datapath.queue' },
  { flag: '--queue-count <n>', path: 'datapath.queueCount' },
  { flag: '--queue-max-length <n>', path: 'datapath.queueMaxLength' },
  { flag: '--fail-open', path: 'datapath.failOpen' },
  { flag: '--mark-base <bit>', path: 'datapath.markBase' },
  { flag: '--mtu <bytes>', path: 'datapath.mtu' },
  { flag: '--on-malformed <action>', path: 'datapath.onMalformed' },
  { flag: '--iptables <backend>', path: 'datapath.iptables' },
  { flag: '--kernel-fast-path <mode>', path: 'datapath.kernelFastPath' },
  { flag: '--fast-path-pin-dir <path>', path: 'datapath.fastPathPinDir' },
  { flag: '--fast-path-state-file <path>', path: 'datapath.fastPathStateFile' },
  { flag: '--fast-path-keep-seconds <n>', path: 'datapath.fastPathKeepSeconds' },
  { flag: '--fast-path-cgroup <path>', path: 'datapath.fastPathCgroup' },
  { flag: '--fast-path-interface <name>', path: 'datapath.fastPathInterfaces', append: true },
  { flag: '--fast-path-conntrack <mode>', path: 'datapath.fastPathConntrack' },
  { flag: '--status-socket <path>', path: 'datapath.statusSocket' },
  { flag: '--target <cidr>', path: 'targets', append: true },
  { flag: '--exclude <cidr>', path: 'excluded', append: true },
  { flag: '--metrics-address <host:port>', path: 'telemetry.metricsAddress' },
  { flag: '--whois-socket <path>', path: 'telemetry.whoisSocket' },
];

/** commander's property name for a flag: --queue-max-length -> queueMaxLength. */
function propertyOf(flag: string): string {
  return flag.split(' ')[0]!.slice(2).replace(/-([a-z])/g, (_, letter: string) => letter.toUpperCase());
}

/** A flag's text as the field's kind reads it; a value that is no number stays NaN and is refused by the schema. */
function flagValue(field: ConfigField, text: unknown): unknown {
  if (typeof text !== 'string') return text;
  return field.override === 'integer' || field.override === 'number' ? Number(text) : text;
}

/** A SYNPASS_* variable that configures the agent (SYNPASS_LOG_LEVEL only sets the log level). */
function hasEnvironmentConfiguration(): boolean {
  return Object.keys(process.env).some((name) => name.startsWith('SYNPASS_') && name !== 'SYNPASS_LOG_LEVEL');
}

export function registerAgentRun(agent: Command): void {
  const fields = new Map(configFields().map((field) => [field.path, field]));
  const command = agent
    .command('run', { isDefault: true })
    .description('bind the NFQUEUE queues, install the rules and judge handshakes until SIGINT/SIGTERM (SIGHUP reloads identity and policy)')
    .option('--config <file>', 'agent configuration (YAML); every field is in docs/operations.md')
    .option('--check-config', 'validate the configuration (file, SYNPASS_* environment and flags), load identity and policy, then exit');
  for (const { flag, path, append } of FIELD_FLAGS) {
    const field = fields.get(path)!;
    const description = `${field.docs} (${path}${append === true ? ', repeatable, added to the configured list' : `; default ${field.defaultText}`})`;
    if (append === true) command.option(flag, description, (value: string, previous: string[]) => [...previous, value], []);
    else command.option(flag, description);
  }
  command.action(async (flags: Record<string, unknown>) => {
    // A check prints its verdict, not the agent's start-up log; problems still show.
    const checking = flags.checkConfig === true;
    const { log, stream: logStream } = checking ? createAgentLog('warn') : createAgentLog();
    const configFile = (flags.config as string | undefined) ?? null;
    if (checking && configFile === null && !hasEnvironmentConfiguration()) {
      failWith('agent run', new RangeError('no configuration to check: give --config FILE (or SYNPASS_* variables)'));
    }
    const overrides: Override[] = [];
    for (const { flag, path, append } of FIELD_FLAGS) {
      const value = flags[propertyOf(flag)];
      if (value === undefined || (append === true && (value as string[]).length === 0)) continue;
      overrides.push({ path, value: flagValue(fields.get(path)!, value), source: flag.split(' ')[0]!, ...(append === true ? { append } : {}) });
    }
    let config: AgentConfig;
    try {
      config = loadAgentConfig(configFile, process.env, overrides);
    } catch (error) {
      failWith('agent run', error);
    }
    for (const warning of config.warnings) {
      if (checking) process.stderr.write(`synpass agent run: warning: ${warning}\n`);
      else log.warn(warning);
    }
    let built: BuiltHandler;
    try {
      built = await buildHandler(config, log, { checkOnly: checking });
    } catch (error) {
      if (checking && error instanceof EnrollmentPending) {
        process.stdout.write(`configuration ok: mode ${config.mode}; ${error.message}\n`);
        process.exit(0);
      }
      failWith('agent run', error);
    }
    if (checking) {
      built.stop();
      process.stdout.write(`configuration ok: mode ${config.mode}, ${config.policy ? `policy ${built.status()?.policy?.revision ?? ''}` : 'no policy directory'}\n`);
      process.exit(0);
    }
    const runtime = new Agent(config, built, log, logStream);
    const shutdown = (signal: string): void => {
      log.info({ signal }, 'stopping');
      void runtime.stop().then(() => process.exit(0));
    };
    process.once('SIGINT', shutdown);
    process.once('SIGTERM', shutdown);
    process.on('SIGHUP', () => {
      log.info({ signal: 'SIGHUP' }, 'reloading identity and policy');
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
}
