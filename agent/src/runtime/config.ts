// The agent's configuration file (YAML). Validation names the field and what it expected;
// relative paths are resolved against the file's directory.
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parse } from 'yaml';
import type { AdmissionConfig } from '../handshake/admission.ts';
import { parseCidr } from '../cli/cidr.ts';

export interface IdentityConfig {
  subject: string;
  credential: string;
  signingKey: string;
  keyAgreementKey: string;
  trustBundles: string;
  tokenTtlMinutes: number;
}

export interface AttestorConfig {
  static: Record<string, string>;
  host: boolean;
  env: string[];
  cloudDocument: string | null;
  postureFile: string | null;
}

/** A local workload with its own identity, told apart by socket owner (client) or port (server). */
export interface WorkloadConfig {
  name: string;
  subject: string;
  uids: number[];
  ports: number[];
  attributes: Record<string, string>;
}

export interface PolicyConfig {
  directory: string;
  /** Reload when files change (SIGHUP always reloads). */
  watch: boolean;
}

export interface AgentConfig {
  mode: 'identity' | 'pass-through';
  /** Policy files; when absent, `admission` decides. */
  policy: PolicyConfig | null;
  identity: IdentityConfig | null;
  workloads: WorkloadConfig[];
  attestors: AttestorConfig;
  admission: AdmissionConfig;
  replayWindowSeconds: number;
  targetNetworks: string[];
  excludedNetworks: string[];
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(
    readonly field: string,
    readonly expected: string,
    readonly file: string,
  ) {
    super(`${file}: ${field}: expected ${expected}`);
  }
}

type Json = Record<string, unknown>;

class Reader {
  constructor(
    private readonly file: string,
    private readonly base: string,
  ) {}

  fail(field: string, expected: string): never {
    throw new ConfigError(field, expected, this.file);
  }

  object(value: unknown, field: string): Json {
    if (value === undefined || value === null) return {};
    if (typeof value !== 'object' || Array.isArray(value)) this.fail(field, 'a mapping');
    return value as Json;
  }

  string(value: unknown, field: string): string {
    if (typeof value !== 'string' || value === '') this.fail(field, 'a non-empty string');
    return value;
  }

  path(value: unknown, field: string): string {
    return resolve(this.base, this.string(value, field));
  }

  optionalPath(value: unknown, field: string): string | null {
    return value === undefined || value === null ? null : this.path(value, field);
  }

  integer(value: unknown, field: string, fallback: number, min: number, max: number): number {
    if (value === undefined) return fallback;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      this.fail(field, `an integer from ${min} to ${max}`);
    }
    return value;
  }

  ports(value: unknown, field: string): number[] | undefined {
    if (value === undefined) return undefined;
    if (!Array.isArray(value)) this.fail(field, 'a list of ports');
    return value.map((port, i) => this.integer(port, `${field}[${i}]`, 0, 1, 65535));
  }

  cidrs(value: unknown, field: string): string[] {
    if (value === undefined) return [];
    if (!Array.isArray(value)) this.fail(field, 'a list of CIDRs');
    return value.map((cidr, i) => {
      try {
        return parseCidr(this.string(cidr, `${field}[${i}]`));
      } catch {
        this.fail(`${field}[${i}]`, 'an IP network like 10.0.0.0/8');
      }
    });
  }

  list(value: unknown, field: string): unknown[] {
    if (value === undefined || value === null) return [];
    if (!Array.isArray(value)) this.fail(field, 'a list');
    return value;
  }

  stringMap(value: unknown, field: string): Record<string, string> {
    const map = this.object(value, field);
    for (const [key, entry] of Object.entries(map)) {
      if (typeof entry !== 'string' && typeof entry !== 'number') this.fail(`${field}.${key}`, 'a string');
      map[key] = String(entry);
    }
    return map as Record<string, string>;
  }

  unknownKeys(value: Json, allowed: string[], field: string): void {
    for (const key of Object.keys(value)) if (!allowed.includes(key)) this.fail(`${field}${field ? '.' : ''}${key}`, `one of ${allowed.join(', ')}`);
  }
}

export function loadAgentConfig(file: string): AgentConfig {
  let document: unknown;
  try {
    document = parse(readFileSync(file, 'utf8'));
  } catch (error) {
    throw new ConfigError('(file)', `readable YAML (${(error as Error).message.split('\n')[0] ?? ''})`, file);
  }
  const r = new Reader(file, dirname(resolve(file)));
  const root = r.object(document, '(root)');
  r.unknownKeys(root, ['mode', 'identity', 'workloads', 'policy', 'attestors', 'admission', 'replayWindowSeconds', 'targets', 'excluded'], '');
  let policy: PolicyConfig | null = null;
  if (root.policy !== undefined) {
    const p = r.object(root.policy, 'policy');
    r.unknownKeys(p, ['directory', 'watch'], 'policy');
    if (p.watch !== undefined && typeof p.watch !== 'boolean') r.fail('policy.watch', 'true or false');
    policy = { directory: r.path(p.directory, 'policy.directory'), watch: (p.watch as boolean | undefined) ?? true };
  }
  const mode: unknown = root.mode ?? 'identity';
  if (mode !== 'identity' && mode !== 'pass-through') r.fail('mode', '"identity" or "pass-through"');
  const checkedMode = mode as AgentConfig['mode'];

  let identity: IdentityConfig | null = null;
  if (mode === 'identity') {
    const id = r.object(root.identity, 'identity');
    r.unknownKeys(id, ['subject', 'credential', 'signingKey', 'keyAgreementKey', 'trustBundles', 'tokenTtlMinutes'], 'identity');
    identity = {
      subject: r.string(id.subject, 'identity.subject'),
      credential: r.path(id.credential, 'identity.credential'),
      signingKey: r.path(id.signingKey, 'identity.signingKey'),
      keyAgreementKey: r.path(id.keyAgreementKey, 'identity.keyAgreementKey'),
      trustBundles: r.path(id.trustBundles, 'identity.trustBundles'),
      tokenTtlMinutes: r.integer(id.tokenTtlMinutes, 'identity.tokenTtlMinutes', 10, 1, 1440),
    };
  }

  const names = new Set<string>();
  const workloads = r.list(root.workloads, 'workloads').map((entry, i) => {
    const field = `workloads[${i}]`;
    const w = r.object(entry, field);
    r.unknownKeys(w, ['name', 'subject', 'uids', 'ports', 'attributes'], field);
    const name = r.string(w.name, `${field}.name`);
    if (names.has(name)) r.fail(`${field}.name`, `a name not used by another workload ("${name}" is)`);
    names.add(name);
    const uids = r.list(w.uids, `${field}.uids`).map((uid, j) => r.integer(uid, `${field}.uids[${j}]`, 0, 0, 0xfffffffe));
    return {
      name,
      subject: r.string(w.subject, `${field}.subject`),
      uids,
      ports: r.ports(w.ports, `${field}.ports`) ?? [],
      attributes: r.stringMap(w.attributes, `${field}.attributes`),
    };
  });

  const at = r.object(root.attestors, 'attestors');
  r.unknownKeys(at, ['static', 'host', 'env', 'cloudDocument', 'postureFile'], 'attestors');
  if (at.host !== undefined && typeof at.host !== 'boolean') r.fail('attestors.host', 'true or false');
  if (at.env !== undefined && (!Array.isArray(at.env) || !at.env.every((n) => typeof n === 'string'))) {
    r.fail('attestors.env', 'a list of variable names');
  }
  const attestors: AttestorConfig = {
    static: r.stringMap(at.static, 'attestors.static'),
    host: (at.host as boolean | undefined) ?? false,
    env: (at.env as string[] | undefined) ?? [],
    cloudDocument: r.optionalPath(at.cloudDocument, 'attestors.cloudDocument'),
    postureFile: r.optionalPath(at.postureFile, 'attestors.postureFile'),
  };

  const ad = r.object(root.admission, 'admission');
  r.unknownKeys(ad, ['protectedPorts', 'allow', 'allowWithoutIdentity'], 'admission');
  const protectedPorts = ad.protectedPorts === 'all' ? 'all' : (r.ports(ad.protectedPorts, 'admission.protectedPorts') ?? []);
  const allowList = r.list(ad.allow, 'admission.allow');
  const allow = allowList.map((entry, i) => {
    const field = `admission.allow[${i}]`;
    const rule = r.object(entry, field);
    r.unknownKeys(rule, ['subject', 'attributes', 'ports'], field);
    const ports = r.ports(rule.ports, `${field}.ports`);
    return {
      ...(rule.subject === undefined ? {} : { subject: r.string(rule.subject, `${field}.subject`) }),
      attributes: r.stringMap(rule.attributes, `${field}.attributes`),
      ...(ports === undefined ? {} : { ports }),
    };
  });
  const anonymousList = r.list(ad.allowWithoutIdentity, 'admission.allowWithoutIdentity');
  const allowWithoutIdentity = anonymousList.map((entry, i) => {
    const field = `admission.allowWithoutIdentity[${i}]`;
    const rule = r.object(entry, field);
    r.unknownKeys(rule, ['cidr', 'ports'], field);
    const ports = r.ports(rule.ports, `${field}.ports`);
    return { cidr: r.cidrs([rule.cidr], `${field}.cidr`)[0]!, ...(ports === undefined ? {} : { ports }) };
  });

  return {
    mode: checkedMode,
    policy,
    identity,
    workloads,
    attestors,
    admission: { protectedPorts, allow, allowWithoutIdentity },
    replayWindowSeconds: r.integer(root.replayWindowSeconds, 'replayWindowSeconds', 30, 1, 600),
    targetNetworks: r.cidrs(root.targets, 'targets'),
    excludedNetworks: r.cidrs(root.excluded, 'excluded'),
  };
}

/** The configuration when no file is given: pass-through, nothing protected. */
export function passThroughConfig(): AgentConfig {
  return {
    mode: 'pass-through',
    policy: null,
    identity: null,
    workloads: [],
    attestors: { static: {}, host: false, env: [], cloudDocument: null, postureFile: null },
    admission: { protectedPorts: [], allow: [], allowWithoutIdentity: [] },
    replayWindowSeconds: 30,
    targetNetworks: [],
    excludedNetworks: [],
  };
}
