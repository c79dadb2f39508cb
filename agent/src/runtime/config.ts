// The agent's configuration file (YAML). Validation names the field and what it expected;
// relative paths are resolved against the file's directory.
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parse } from 'yaml';
import type { AdmissionConfig } from '../handshake/admission.ts';
import { parseCidr } from '../cli/cidr.ts';
import { MAX_MARK_BASE } from '../datapath/marks.ts';
import { SynpassError } from '../errors.ts';

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

export interface DatapathConfig {
  queue: number;
  queueCount: number;
  queueMaxLength: number;
  failOpen: boolean;
  markBase: number;
  mtu: number;
  onMalformed: 'drop' | 'accept';
  iptables: 'nft' | 'legacy';
  statusSocket: string;
}

export interface FlowLogConfig {
  /** stdout: the agent's log stream; file: JSON lines with size-based rotation. */
  sink: 'stdout' | 'file';
  file: string | null;
  maxBytes: number;
  maxFiles: number;
  /** Fraction of accepted connections logged (drops are always logged). */
  sampleAccepted: number;
}

export interface TelemetryConfig {
  metricsAddress: string | null;
  /** Unix socket of the peer-identity API (`synpass whois`); null turns it off. */
  whoisSocket: string | null;
  credentialMarginSeconds: number;
  flowLog: FlowLogConfig;
}

export const DEFAULT_DATAPATH: DatapathConfig = {
  queue: 3170,
  queueCount: 1,
  queueMaxLength: 4096,
  failOpen: false,
  markBase: 0x00100000,
  mtu: 1500,
  onMalformed: 'drop',
  iptables: 'nft',
  statusSocket: '/run/synpass/agent.sock',
};

export const DEFAULT_TELEMETRY: TelemetryConfig = {
  metricsAddress: null,
  whoisSocket: '/run/synpass/whois.sock',
  credentialMarginSeconds: 300,
  flowLog: { sink: 'stdout', file: null, maxBytes: 50 * 1024 * 1024, maxFiles: 5, sampleAccepted: 1 },
};

export interface KubernetesConfig {
  nodeName: string;
  /** Null: in-cluster (KUBERNETES_SERVICE_HOST and the service-account mount). */
  apiServer: string | null;
}

export interface AgentConfig {
  mode: 'identity' | 'pass-through';
  /** Pods of this node as workloads (pod attestor); null when not on Kubernetes. */
  kubernetes: KubernetesConfig | null;
  datapath: DatapathConfig;
  telemetry: TelemetryConfig;
  /** Policy files; when absent, `admission` decides. */
  policy: PolicyConfig | null;
  identity: IdentityConfig | null;
  workloads: WorkloadConfig[];
  attestors: AttestorConfig;
  admission: AdmissionConfig;
  replayWindowSeconds: number;
  targetNetworks: string[];
  excludedNetworks: string[];
  /** Settings that are valid but have no effect, each naming the file and field. */
  warnings: string[];
}

export class ConfigError extends SynpassError<'invalid-field'> {
  override readonly name = 'ConfigError';
  constructor(
    readonly field: string,
    readonly expected: string,
    readonly file: string,
  ) {
    super('invalid-field', `${file}: ${field}: expected ${expected}`, { field, file });
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

/**
 * Every scalar and list field can be set from the environment: the path in SCREAMING_SNAKE
 * case after SYNPASS_ (identity.tokenTtlMinutes -> SYNPASS_IDENTITY_TOKEN_TTL_MINUTES); lists
 * are comma-separated. The environment wins over the file.
 */
const OVERRIDABLE: readonly [string, 'string' | 'integer' | 'number' | 'boolean' | 'list'][] = [
  ['mode', 'string'],
  ['identity.subject', 'string'],
  ['identity.credential', 'string'],
  ['identity.signingKey', 'string'],
  ['identity.keyAgreementKey', 'string'],
  ['identity.trustBundles', 'string'],
  ['identity.tokenTtlMinutes', 'integer'],
  ['policy.directory', 'string'],
  ['policy.watch', 'boolean'],
  ['attestors.host', 'boolean'],
  ['attestors.env', 'list'],
  ['attestors.cloudDocument', 'string'],
  ['attestors.postureFile', 'string'],
  ['replayWindowSeconds', 'integer'],
  ['targets', 'list'],
  ['excluded', 'list'],
  ['datapath.queue', 'integer'],
  ['datapath.queueCount', 'integer'],
  ['datapath.queueMaxLength', 'integer'],
  ['datapath.failOpen', 'boolean'],
  ['datapath.markBase', 'integer'],
  ['datapath.mtu', 'integer'],
  ['datapath.onMalformed', 'string'],
  ['datapath.iptables', 'string'],
  ['datapath.statusSocket', 'string'],
  ['kubernetes.nodeName', 'string'],
  ['kubernetes.apiServer', 'string'],
  ['telemetry.metricsAddress', 'string'],
  ['telemetry.whoisSocket', 'string'],
  ['telemetry.credentialMarginSeconds', 'integer'],
  ['telemetry.flowLog.sink', 'string'],
  ['telemetry.flowLog.file', 'string'],
  ['telemetry.flowLog.maxBytes', 'integer'],
  ['telemetry.flowLog.maxFiles', 'integer'],
  ['telemetry.flowLog.sampleAccepted', 'number'],
];

export function environmentName(path: string): string {
  return `SYNPASS_${path.replace(/\./g, '_').replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()}`;
}

function applyEnvironment(root: Json, environment: NodeJS.ProcessEnv, file: string): void {
  for (const [path, type] of OVERRIDABLE) {
    const name = environmentName(path);
    const text = environment[name];
    if (text === undefined) continue;
    let value: unknown = text;
    if (type === 'integer' || type === 'number') {
      value = text.trim() === '' ? Number.NaN : Number(text);
      if (!Number.isFinite(value) || (type === 'integer' && !Number.isInteger(value))) {
        throw new ConfigError(`${name} (${path})`, type === 'integer' ? 'an integer' : 'a number', 'environment');
      }
    } else if (type === 'boolean') {
      if (text !== 'true' && text !== 'false') throw new ConfigError(`${name} (${path})`, 'true or false', 'environment');
      value = text === 'true';
    } else if (type === 'list') {
      value = text.split(',').map((item) => item.trim()).filter(Boolean);
    }
    const keys = path.split('.');
    let node = root;
    for (const key of keys.slice(0, -1)) {
      const next = node[key];
      if (next !== undefined && (typeof next !== 'object' || next === null || Array.isArray(next))) {
        throw new ConfigError(key, 'a mapping (to apply the environment override)', file);
      }
      node = (next as Json | undefined) ?? (node[key] = {});
    }
    node[keys.at(-1)!] = value;
  }
}

export function loadAgentConfig(file: string | null, environment: NodeJS.ProcessEnv = process.env): AgentConfig {
  let document: unknown;
  if (file !== null) {
    try {
      document = parse(readFileSync(file, 'utf8')) ?? {};
    } catch (error) {
      throw new ConfigError('(file)', `readable YAML (${(error as Error).message.split('\n')[0] ?? ''})`, file);
    }
  } else {
    document = { mode: 'pass-through' };
  }
  const source = file ?? '(no file)';
  const r: Reader = new Reader(source, file === null ? process.cwd() : dirname(resolve(file)));
  const root = r.object(document, '(root)');
  applyEnvironment(root, environment, source);
  r.unknownKeys(root, ['mode', 'identity', 'workloads', 'policy', 'attestors', 'admission', 'replayWindowSeconds', 'targets', 'excluded', 'datapath', 'telemetry', 'kubernetes'], '');
  let kubernetes: KubernetesConfig | null = null;
  if (root.kubernetes !== undefined) {
    const k = r.object(root.kubernetes, 'kubernetes');
    r.unknownKeys(k, ['nodeName', 'apiServer'], 'kubernetes');
    const apiServer = k.apiServer === undefined ? null : r.string(k.apiServer, 'kubernetes.apiServer');
    if (apiServer !== null && !/^https?:\/\//.test(apiServer)) r.fail('kubernetes.apiServer', 'an http(s):// URL');
    kubernetes = { nodeName: r.string(k.nodeName, 'kubernetes.nodeName'), apiServer };
  }
  const d = r.object(root.datapath, 'datapath');
  r.unknownKeys(d, Object.keys(DEFAULT_DATAPATH), 'datapath');
  const bool = (value: unknown, field: string, fallback: boolean): boolean => {
    if (value === undefined) return fallback;
    if (typeof value !== 'boolean') r.fail(field, 'true or false');
    return value;
  };
  const choice = <T extends string>(value: unknown, field: string, choices: readonly T[], fallback: T): T => {
    if (value === undefined) return fallback;
    if (typeof value !== 'string' || !(choices as readonly string[]).includes(value)) r.fail(field, `one of ${choices.join(', ')}`);
    return value as T;
  };
  const markBase = r.integer(d.markBase, 'datapath.markBase', DEFAULT_DATAPATH.markBase, 1, MAX_MARK_BASE);
  if ((markBase & (markBase - 1)) !== 0) r.fail('datapath.markBase', 'a single bit, e.g. 1048576 (0x100000)');
  const datapath: DatapathConfig = {
    queue: r.integer(d.queue, 'datapath.queue', DEFAULT_DATAPATH.queue, 0, 65535),
    queueCount: r.integer(d.queueCount, 'datapath.queueCount', DEFAULT_DATAPATH.queueCount, 1, 64),
    queueMaxLength: r.integer(d.queueMaxLength, 'datapath.queueMaxLength', DEFAULT_DATAPATH.queueMaxLength, 1, 1_000_000),
    failOpen: bool(d.failOpen, 'datapath.failOpen', DEFAULT_DATAPATH.failOpen),
    markBase,
    mtu: r.integer(d.mtu, 'datapath.mtu', DEFAULT_DATAPATH.mtu, 576, 65535),
    onMalformed: choice(d.onMalformed, 'datapath.onMalformed', ['drop', 'accept'] as const, DEFAULT_DATAPATH.onMalformed),
    iptables: choice(d.iptables, 'datapath.iptables', ['nft', 'legacy'] as const, DEFAULT_DATAPATH.iptables),
    statusSocket: d.statusSocket === undefined ? DEFAULT_DATAPATH.statusSocket : r.path(d.statusSocket, 'datapath.statusSocket'),
  };
  const t = r.object(root.telemetry, 'telemetry');
  r.unknownKeys(t, ['metricsAddress', 'whoisSocket', 'credentialMarginSeconds', 'flowLog'], 'telemetry');
  const f = r.object(t.flowLog, 'telemetry.flowLog');
  r.unknownKeys(f, ['sink', 'file', 'maxBytes', 'maxFiles', 'sampleAccepted'], 'telemetry.flowLog');
  const metricsAddress = t.metricsAddress === undefined ? null : r.string(t.metricsAddress, 'telemetry.metricsAddress');
  if (metricsAddress !== null && !/^(\[[0-9a-fA-F:]+\]|[^:]+):\d{1,5}$/.test(metricsAddress)) r.fail('telemetry.metricsAddress', 'host:port, e.g. 0.0.0.0:9464');
  const sink = choice(f.sink, 'telemetry.flowLog.sink', ['stdout', 'file'] as const, 'stdout');
  const flowFile = f.file === undefined ? null : r.path(f.file, 'telemetry.flowLog.file');
  if (sink === 'file' && flowFile === null) r.fail('telemetry.flowLog.file', 'a path (sink is "file")');
  const sample = f.sampleAccepted === undefined ? 1 : f.sampleAccepted;
  if (typeof sample !== 'number' || sample < 0 || sample > 1) r.fail('telemetry.flowLog.sampleAccepted', 'a number from 0 to 1');
  const telemetry: TelemetryConfig = {
    metricsAddress,
    whoisSocket: t.whoisSocket === undefined ? DEFAULT_TELEMETRY.whoisSocket : t.whoisSocket === 'off' ? null : r.path(t.whoisSocket, 'telemetry.whoisSocket'),
    credentialMarginSeconds: r.integer(t.credentialMarginSeconds, 'telemetry.credentialMarginSeconds', DEFAULT_TELEMETRY.credentialMarginSeconds, 0, 31_536_000),
    flowLog: {
      sink,
      file: flowFile,
      maxBytes: r.integer(f.maxBytes, 'telemetry.flowLog.maxBytes', DEFAULT_TELEMETRY.flowLog.maxBytes, 4096, 2 ** 40),
      maxFiles: r.integer(f.maxFiles, 'telemetry.flowLog.maxFiles', DEFAULT_TELEMETRY.flowLog.maxFiles, 1, 1000),
      sampleAccepted: sample,
    },
  };
  let policy: PolicyConfig | null = null;
  if (root.policy !== undefined) {
    const p = r.object(root.policy, 'policy');
    r.unknownKeys(p, ['directory', 'watch'], 'policy');
    if (p.watch !== undefined && typeof p.watch !== 'boolean') r.fail('policy.watch', 'true or false');
    policy = { directory: r.path(p.directory, 'policy.directory'), watch: (p.watch) ?? true };
  }
  const mode: unknown = root.mode ?? 'identity';
  if (mode !== 'identity' && mode !== 'pass-through') r.fail('mode', '"identity" or "pass-through"');
  const checkedMode = mode;

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
    host: (at.host) ?? false,
    env: (at.env) ?? [],
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

  const warnings: string[] = [];
  if (policy !== null && root.admission !== undefined) {
    warnings.push(`${source}: admission: ignored, since policy is set (the policy directory decides every connection)`);
  }

  return {
    warnings,
    mode: checkedMode,
    kubernetes,
    datapath,
    telemetry,
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
