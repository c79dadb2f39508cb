// Run inside a lab host by the bench: installs the agent's own rules, as `synpass agent run`
// would with its default queue and marks, for the C reference loop (nfq-reference.c) to serve;
// or removes them again, with their emptied built-in chains.
//   reference-rules.ts install <target cidr>... [--exclude <cidr>]...
//   reference-rules.ts remove
import { installRules, removeAllRules } from '../../agent/src/datapath/iptables.ts';
import { connectionMarks } from '../../agent/src/datapath/marks.ts';
import { DEFAULT_DATAPATH } from '../../agent/src/runtime/config.ts';

const [command, ...rest] = process.argv.slice(2);
if (command === 'remove') {
  await removeAllRules();
} else if (command === 'install') {
  const targetNetworks: string[] = [];
  const excludedNetworks: string[] = [];
  for (let i = 0; i < rest.length; i++) {
    if (rest[i] === '--exclude') excludedNetworks.push(rest[++i]!);
    else targetNetworks.push(rest[i]!);
  }
  const installed = await installRules({
    queueNumber: DEFAULT_DATAPATH.queue,
    queueCount: DEFAULT_DATAPATH.queueCount,
    failOpen: false,
    queueRatePerSource: DEFAULT_DATAPATH.queueRatePerSource,
    queueMaxLength: DEFAULT_DATAPATH.queueMaxLength,
    marks: connectionMarks(DEFAULT_DATAPATH.markBase),
    targetNetworks,
    excludedNetworks,
    routedWorkloads: false,
  });
  process.stdout.write(`${JSON.stringify({ installed: installed.backend, queue: DEFAULT_DATAPATH.queue, markBase: DEFAULT_DATAPATH.markBase })}\n`);
} else {
  process.stderr.write('usage: reference-rules.ts install <target cidr>... [--exclude <cidr>]... | remove\n');
  process.exit(2);
}
