// The iptables edge: detect a backend that can load the NFQUEUE target, install the ruleset
// from rules.ts, and remove it (also leftovers of a crashed agent, from every backend).
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { RulesError } from './errors.ts';
import type { ConnectionMarks } from './marks.ts';
import { buildDeferRuleset, buildNativeNotrack, buildNotrackRuleset, buildRemoval, buildRuleset, emptiedBuiltinChains, nftNatRules, rulesAheadOfHooks, NATIVE_TABLE, rulesPresent, sourceLimitedCount, unjudgedSynCount, type DeferPrograms, type IpFamily, type RuleOptions } from './rules.ts';

const run = promisify(execFile);

export type Backend = 'nft' | 'legacy';

interface Tool {
  family: IpFamily;
  backend: Backend;
  binary: string;
}

const TOOLS: readonly Tool[] = [
  { family: 4, backend: 'nft', binary: 'iptables-nft' },
  { family: 4, backend: 'legacy', binary: 'iptables-legacy' },
  { family: 6, backend: 'nft', binary: 'ip6tables-nft' },
  { family: 6, backend: 'legacy', binary: 'ip6tables-legacy' },
];

async function exec(binary: string, args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(binary, args, { encoding: 'utf8', timeout: 15_000 }, (error, stdout, stderr) => {
      if (error) {
        const code = (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'no-iptables' : 'command-failed';
        reject(
          new RulesError(code, `${binary} ${args.join(' ')} failed: ${stderr.trim() || error.message}`, {
            binary,
          }),
        );
        return;
      }
      resolve(stdout);
    });
    // A tool that exits without reading stdin (iptables-save) must not crash us with EPIPE.
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(input ?? '');
  });
}

/** Tools found working, asked once: a repair of removed rules starts no process to ask again. */
const working = new Set<string>();

async function available(tool: Tool): Promise<boolean> {
  if (working.has(tool.binary)) return true;
  try {
    await run(tool.binary, ['--version'], { timeout: 5_000 });
    working.add(tool.binary);
    return true;
  } catch {
    return false;
  }
}

/** The save/restore binaries of a tool: iptables-nft -> iptables-nft-save, ... */
function saveBinary(tool: Tool): string {
  return tool.binary.replace(/^(ip6?tables)-(nft|legacy)$/, '$1-$2-save');
}
function restoreBinary(tool: Tool): string {
  return tool.binary.replace(/^(ip6?tables)-(nft|legacy)$/, '$1-$2-restore');
}

type Table = 'mangle' | 'raw' | 'nat';

/** Whether the legacy backend has `table` here; asking iptables-legacy would create one. */
async function legacyTableExists(family: IpFamily, table: Table): Promise<boolean> {
  try {
    const names = await readFile(family === 4 ? '/proc/net/ip_tables_names' : '/proc/net/ip6_tables_names', 'utf8');
    return names.split('\n').includes(table);
  } catch {
    return false;
  }
}

/** `iptables-save -t table` of a tool, or null when the legacy backend has no such table. */
async function savedTable(tool: Tool, table: Table): Promise<string | null> {
  if (tool.backend === 'legacy' && !(await legacyTableExists(tool.family, table))) return null;
  return exec(saveBinary(tool), ['-t', table]);
}

async function removeFromTable(tool: Tool, table: 'mangle' | 'raw'): Promise<boolean> {
  const saved = await savedTable(tool, table);
  const removal = saved === null ? null : buildRemoval(saved, table);
  if (saved === null || removal === null) return false;
  await exec(restoreBinary(tool), ['--noflush'], removal);
  if (tool.backend === 'nft') {
    // Apart from the removal, which must not fail because another tool added a rule meanwhile;
    // the legacy backend cannot delete a built-in chain, and its table's hooks stay anyway.
    for (const chain of emptiedBuiltinChains(saved)) await exec(tool.binary, ['-t', table, '-X', chain]).catch(() => undefined);
  }
  return true;
}

async function removeWith(tool: Tool): Promise<boolean> {
  const mangle = await removeFromTable(tool, 'mangle');
  const raw = await removeFromTable(tool, 'raw');
  return mangle || raw;
}

export interface InstalledRules {
  backend: Backend;
  families: IpFamily[];
}

/**
 * Installs the ruleset for IPv4 and (where ip6tables works) IPv6. Idempotent: leftovers of an
 * earlier run are removed first. Tries the nft backend, then legacy, keeping the first one that
 * loads the NFQUEUE target in this network namespace.
 */
export async function installRules(options: RuleOptions, preferred?: Backend): Promise<InstalledRules> {
  await removeAllRules();
  const order: Backend[] = preferred === 'legacy' ? ['legacy', 'nft'] : ['nft', 'legacy'];
  const failures: string[] = [];
  for (const backend of order) {
    const v4 = TOOLS.find((t) => t.family === 4 && t.backend === backend)!;
    if (!(await available(v4))) {
      failures.push(`${v4.binary}: not installed`);
      continue;
    }
    try {
      await exec(restoreBinary(v4), ['--noflush'], buildRuleset(4, options));
      if (options.deferPrograms !== undefined) await exec(restoreBinary(v4), ['--noflush'], buildDeferRuleset(options, options.deferPrograms));
    } catch (error) {
      failures.push((error as Error).message);
      await removeWith(v4).catch(() => false);
      continue;
    }
    const families: IpFamily[] = [4];
    const v6 = TOOLS.find((t) => t.family === 6 && t.backend === backend)!;
    if (await available(v6)) {
      try {
        await exec(restoreBinary(v6), ['--noflush'], buildRuleset(6, options));
        if (options.deferPrograms !== undefined) await exec(restoreBinary(v6), ['--noflush'], buildDeferRuleset(options, options.deferPrograms));
        families.push(6);
      } catch (error) {
        await removeAllRules();
        throw new RulesError('command-failed', `IPv6 rules failed on the ${backend} backend: ${(error as Error).message}`);
      }
    }
    return { backend, families };
  }
  throw new RulesError('unsupported', `no iptables backend could install the NFQUEUE rules: ${failures.join('; ')}`);
}

/** Removes synpass rules and chains from every backend and family, and its nftables table; returns how many tables changed. */
export async function removeAllRules(): Promise<number> {
  let removed = 0;
  for (const tool of TOOLS) {
    if (!(await available(tool))) continue;
    if (await removeWith(tool)) removed += 1;
  }
  // Fails when there is no such table, or no nft command (then there is none of ours either).
  if (await exec('nft', ['delete', 'table', 'inet', NATIVE_TABLE]).then(() => true, () => false)) removed += 1;
  return removed;
}

/** The tool of one family on the backend the rules went in with. */
function toolOf(installed: InstalledRules, family: IpFamily): Tool {
  return TOOLS.find((t) => t.family === family && t.backend === installed.backend)!;
}

/** What leaves the kernel fast path's connections out of conntrack: nftables' own notrack, or the iptables raw table. */
export type NotrackBy = 'nftables' | 'iptables';

/**
 * The rules that leave the kernel fast path's connections out of conntrack: natively in an
 * nftables table of the agent's own (rules.ts, buildNativeNotrack) where the `nft` command works,
 * else in the raw table (buildNotrackRuleset), on the backend and families the ruleset went in with.
 */
export async function installNotrackRules(installed: InstalledRules, marks: ConnectionMarks): Promise<NotrackBy> {
  const native = await exec('nft', ['-f', '-'], buildNativeNotrack(marks)).then(() => true, () => false);
  if (native) return 'nftables';
  for (const family of installed.families) {
    const tool = toolOf(installed, family);
    await exec(restoreBinary(tool), ['--noflush'], buildNotrackRuleset(marks));
  }
  return 'iptables';
}

/**
 * The rules that judge a node's pods' SYNs the kernel fast path deferred past the DNAT
 * (rules.ts, buildDeferRuleset), added to the ruleset in place, on the backend and families it
 * went in with. Fails where iptables or the kernel has no bpf match.
 */
export async function installDeferRules(installed: InstalledRules, options: RuleOptions, programs: DeferPrograms): Promise<void> {
  for (const family of installed.families) await exec(restoreBinary(toolOf(installed, family)), ['--noflush'], buildDeferRuleset(options, programs));
}

/**
 * Whether this network namespace translates addresses (a rule in an nft chain of type nat, or an
 * iptables nat rule). Native nft tables (kube-proxy's nftables mode, firewalld) do not show in
 * iptables-save; iptables-nft's rules show in nft's ruleset, so with that backend one `nft` call
 * answers (the agent asks at every rule check while it waits for NAT rules).
 */
export async function natInUse(installed: InstalledRules): Promise<boolean> {
  const ruleset = await exec('nft', ['-j', 'list', 'ruleset']).catch(() => null);
  const nft = ruleset === null ? null : nftNatRules(ruleset);
  if (nft === true) return true;
  for (const family of installed.families) {
    const tool = toolOf(installed, family);
    if (nft !== null && tool.backend === 'nft') continue;
    const saved = await savedTable(tool, 'nat');
    if (saved !== null && saved.split('\n').some((line) => line.startsWith('-A '))) return true;
  }
  return false;
}

export interface RuleInspection {
  /** Every rule of our ruleset is in place, in every family it went in for (counted, not just present). */
  present: boolean;
  /** SYNs that reached INPUT or FORWARD without a verdict since the rules went in, over every family. */
  unjudgedSyns: number;
  /** Packets dropped above their source's rate since the rules went in, over every family. */
  sourceLimitedPackets: number;
  /** Other rules ahead of the agent's hook jumps, over every family (see rulesAheadOfHooks). */
  rulesAhead: number;
}

/** One `iptables-save -c` per family answers every question of the periodic rule check. */
export async function inspectRules(installed: InstalledRules, options: RuleOptions): Promise<RuleInspection> {
  const inspection: RuleInspection = { present: true, unjudgedSyns: 0, sourceLimitedPackets: 0, rulesAhead: 0 };
  for (const family of installed.families) {
    const tool = toolOf(installed, family);
    const saved = await exec(saveBinary(tool), ['-c', '-t', 'mangle']);
    // Either family's rules gone lets that family's SYNs in unjudged.
    if (!rulesPresent(family, saved, options)) inspection.present = false;
    inspection.unjudgedSyns += unjudgedSynCount(saved);
    inspection.sourceLimitedPackets += sourceLimitedCount(saved);
    inspection.rulesAhead += rulesAheadOfHooks(saved);
  }
  return inspection;
}
