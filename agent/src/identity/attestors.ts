// Attestors: each yields attributes and vouches for them under its own name (provenance).
// An attribute name is "<namespace>.<key>"; the agent's credential lists the namespaces it may
// assert, so a peer rejects attributes an agent was never allowed to vouch for. A Kubernetes pod
// attestor slots in by implementing the same interface.
import { readFile } from 'node:fs/promises';
import { hostname, platform, release } from 'node:os';
import { namespaceOf, type Attribute } from '../token/identity-token.ts';
import { SynpassError } from '../errors.ts';

export class AttestorError extends SynpassError<'bad-document'> {
  override readonly name = 'AttestorError';
}

export interface Attestor {
  readonly name: string;
  /** The attribute namespaces it may yield: the agent credential must list each one. */
  readonly namespaces: readonly string[];
  attest(): Promise<Map<string, Attribute>>;
}

function attributes(attestor: string, values: Record<string, string | undefined>): Map<string, Attribute> {
  const result = new Map<string, Attribute>();
  for (const [name, value] of Object.entries(values)) if (value !== undefined && value !== '') result.set(name, { value, attestor });
  return result;
}

export class StaticAttestor implements Attestor {
  readonly name = 'static';
  readonly namespaces: readonly string[];
  constructor(private readonly labels: Record<string, string>) {
    this.namespaces = [...new Set(Object.keys(labels).map(namespaceOf))];
  }
  attest(): Promise<Map<string, Attribute>> {
    return Promise.resolve(attributes(this.name, this.labels));
  }
}

export class HostAttestor implements Attestor {
  readonly name = 'host';
  readonly namespaces = ['host'];
  constructor(private readonly machineIdPath = '/etc/machine-id') {}
  async attest(): Promise<Map<string, Attribute>> {
    const machineId = await readFile(this.machineIdPath, 'utf8').then((text) => text.trim(), () => undefined);
    return attributes(this.name, {
      'host.name': hostname(),
      'host.os': platform(),
      'host.kernel': release(),
      'host.machine-id': machineId,
    });
  }
}

/** Named environment variables, as env.<name in lower case with - for _>. */
export class EnvironmentAttestor implements Attestor {
  readonly name = 'env';
  readonly namespaces = ['env'];
  constructor(
    private readonly names: string[],
    private readonly environment: NodeJS.ProcessEnv = process.env,
  ) {}
  attest(): Promise<Map<string, Attribute>> {
    const values: Record<string, string | undefined> = {};
    for (const name of this.names) values[`env.${name.toLowerCase().replaceAll('_', '-')}`] = this.environment[name];
    return Promise.resolve(attributes(this.name, values));
  }
}

async function readJsonObject(path: string): Promise<Record<string, unknown>> {
  const value: unknown = JSON.parse(await readFile(path, 'utf8'));
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new AttestorError('bad-document', `${path}: expected a JSON object`, { path });
  return value as Record<string, unknown>;
}

function text(value: unknown): string | undefined {
  return typeof value === 'string' || typeof value === 'number' ? String(value) : undefined;
}

/** A cloud instance-identity document (AWS field names; GCP/Azure documents map the same way). */
export class CloudDocumentAttestor implements Attestor {
  readonly name = 'cloud';
  readonly namespaces = ['cloud'];
  constructor(private readonly path: string) {}
  async attest(): Promise<Map<string, Attribute>> {
    const doc = await readJsonObject(this.path);
    return attributes(this.name, {
      'cloud.provider': text(doc.provider) ?? 'aws',
      'cloud.account': text(doc.accountId),
      'cloud.region': text(doc.region),
      'cloud.zone': text(doc.availabilityZone),
      'cloud.instance-id': text(doc.instanceId),
      'cloud.image': text(doc.imageId),
      'cloud.instance-type': text(doc.instanceType),
    });
  }
}

/** A posture report (e.g. a vulnerability scanner's summary) so policy can require good posture. */
export class PostureAttestor implements Attestor {
  readonly name = 'posture';
  readonly namespaces = ['posture'];
  constructor(private readonly path: string) {}
  async attest(): Promise<Map<string, Attribute>> {
    const doc = await readJsonObject(this.path);
    const cves = (doc.openCves ?? {}) as Record<string, unknown>;
    return attributes(this.name, {
      'posture.patch-level': text(doc.patchLevel),
      'posture.scanner': text(doc.scanner),
      'posture.scanned-at': text(doc.scannedAt),
      'posture.cves-critical': text(cves.critical),
      'posture.cves-high': text(cves.high),
    });
  }
}

/** Runs every attestor; a later attestor never overrides an attribute an earlier one vouched for. */
export async function collectAttributes(attestors: readonly Attestor[]): Promise<Map<string, Attribute>> {
  const merged = new Map<string, Attribute>();
  for (const attestor of attestors) {
    for (const [name, attribute] of await attestor.attest()) if (!merged.has(name)) merged.set(name, attribute);
  }
  return merged;
}

/**
 * The local process behind a connection, as the kernel names it: NFQUEUE reports the owner
 * (uid/gid) of the socket that sent a locally generated packet. The agent maps owners to
 * workloads; this attestor vouches for the owner and its account name.
 */
export class ProcessAttestor implements Attestor {
  readonly name = 'process';
  readonly namespaces: readonly string[];
  constructor(
    private readonly uids: readonly number[],
    private readonly passwdPath = '/etc/passwd',
  ) {
    this.namespaces = uids.length === 0 ? [] : ['process'];
  }
  async attest(): Promise<Map<string, Attribute>> {
    if (this.uids.length === 0) return new Map();
    const passwd = await readFile(this.passwdPath, 'utf8').catch(() => '');
    const accounts = new Map(passwd.split('\n').map((line) => line.split(':')).map((fields) => [fields[2], fields[0]]));
    const users = this.uids.map((uid) => accounts.get(String(uid))).filter((user) => user !== undefined);
    return attributes(this.name, {
      'process.uid': this.uids.join(','),
      'process.user': users.length === this.uids.length ? users.join(',') : undefined,
    });
  }
}
