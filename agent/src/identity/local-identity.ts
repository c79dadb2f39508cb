// This agent's own identity: its credential and keys (read once, never logged), the trust
// bundles it accepts, and the workload token it presents, renewed before it expires.
import { createPublicKey, type KeyObject } from 'node:crypto';
import { SynpassError } from '../errors.ts';
import { keyId } from '../protocol/proofs.ts';
import { packJws, type PackedJws } from '../protocol/wire.ts';
import { issueIdentityToken, namespaceOf, nodeProvenance, type Attribute, type VerifiedIdentity } from '../token/identity-token.ts';
import { collectAttributes, type Attestor } from './attestors/attestor.ts';
import { readCredentialFile, verifyCredential, type VerifiedCredential } from '../token/credential.ts';
import { readPrivateKey } from './key-files.ts';
import { loadTrustBundles, type TrustBundle } from '../token/trust-bundle.ts';

export interface IdentityFiles {
  credential: string;
  signingKey: string;
  keyAgreementKey: string;
  trustBundles: string;
}

export interface WorkloadIdentity {
  name: string;
  subject: string;
  /** Client side: connections whose socket belongs to one of these users. */
  uids: readonly number[];
  /** Client side: connections opened in one of these cgroups or below (with the kernel fast path); they win over `uids`. */
  cgroups: readonly string[];
  /** Server side: connections to these local ports. */
  ports: readonly number[];
  attestors: readonly Attestor[];
}

/** Identities of the pods this node routes for, as the pod attestor vouches for them. */
export interface LocalPods {
  identityOf(address: string): VerifiedIdentity | undefined;
  /** Whether `address` belongs to the node itself (its own sockets, not a pod's). */
  isNodeAddress(address: string): boolean;
}

/** A workload known by its address (a pod this node routes for), from a dynamic source. */
export interface AddressWorkload {
  address: string;
  name: string;
  subject: string;
  attributes: ReadonlyMap<string, Attribute>;
}

/** What `LocalIdentity.load` reads from its files. */
export interface IdentityMaterial {
  credentialCompact: string;
  signKey: KeyObject;
  kex: KeyObject;
  bundles: Map<string, TrustBundle>;
}

export interface LocalIdentityOptions {
  files: IdentityFiles;
  /** The host's default workload: connections no other workload claims. */
  subject: string;
  attestors: readonly Attestor[];
  workloads?: readonly WorkloadIdentity[];
  tokenTtlSeconds: number;
  /** Hears attributes left out because the credential does not allow their namespace. */
  onAttributeDropped?: (workload: string, attribute: string) => void;
}

/** One workload's current token, in compact and wire form. */
export interface WorkloadToken {
  name: string;
  subject: string;
  token: string;
  packed: PackedJws;
  attributes: Map<string, Attribute>;
  /** What policy sees of this workload when it is the local side: attributes plus synpass.*. */
  localAttributes: Readonly<Record<string, string>>;
  /** This workload as a peer reads it from the token: the other end of a connection this node judges alone (a local pod's to the node). */
  asPeer: VerifiedIdentity;
}

export type IdentityErrorCode = 'identity-file' | 'key-mismatch' | 'credential-expired' | 'bad-workload';

/** A problem with the agent's own identity, naming the configuration field (identity.*) it came from. */
export class IdentityError extends SynpassError<IdentityErrorCode> {
  override readonly name = 'IdentityError';
}

/** Runs one read of an identity file; what it throws names the field and keeps its code. */
function fromField<T>(field: keyof IdentityFiles, read: () => T): T {
  try {
    return read();
  } catch (error) {
    if (!(error instanceof SynpassError)) throw error;
    throw new IdentityError('identity-file', `identity.${field}: ${(error as Error).message}`, { field: `identity.${field}`, reason: String(error.code) }, { cause: error });
  }
}

function mismatch(field: 'signingKey' | 'keyAgreementKey', files: IdentityFiles): IdentityError {
  return new IdentityError('key-mismatch', `identity.${field}: ${files[field]} does not match the public key in ${files.credential}`, { field: `identity.${field}` });
}

export class LocalIdentity {
  /** The credential as it goes on the wire, encoded once rather than per SYN. */
  packedCredential: PackedJws;
  /** Short id of our key-agreement key, as a known-peer SYN names it. */
  readonly keyId: Buffer;
  tokenExpiresAt = 0;
  /** The host's default workload token. */
  defaultToken: WorkloadToken | null = null;
  private byUid = new Map<number, WorkloadToken>();
  /** By workload number: the position in `workloads` from 1, as the kernel names a cgroup workload. */
  private byWorkloadNumber = new Map<number, WorkloadToken>();
  private byPort = new Map<number, WorkloadToken>();
  private byAddress = new Map<string, WorkloadToken>();
  private addressSource: (() => AddressWorkload[]) | null = null;
  /** Tokens already signed for an unchanged attribute set: a pod event does not re-sign them all. */
  private addressTokens = new WeakMap<ReadonlyMap<string, Attribute>, WorkloadToken>();
  private addressRefresh: Promise<void> = Promise.resolve();
  private renewal: NodeJS.Timeout | null = null;

  private constructor(
    readonly options: LocalIdentityOptions,
    readonly credentialCompact: string,
    readonly credential: VerifiedCredential,
    readonly signKey: KeyObject,
    readonly kex: KeyObject,
    readonly kexRaw: Buffer,
    readonly bundles: Map<string, TrustBundle>,
  ) {
    this.packedCredential = packJws(credentialCompact);
    this.keyId = keyId(kexRaw);
  }

  static async load(options: LocalIdentityOptions, nowSeconds = Math.floor(Date.now() / 1000)): Promise<LocalIdentity> {
    const { files } = options;
    const bundles = fromField('trustBundles', () => loadTrustBundles(files.trustBundles));
    const credentialCompact = fromField('credential', () => readCredentialFile(files.credential));
    const signKey = fromField('signingKey', () => readPrivateKey(files.signingKey));
    const kex = fromField('keyAgreementKey', () => readPrivateKey(files.keyAgreementKey));
    return LocalIdentity.fromMaterial(options, { credentialCompact, signKey, kex, bundles }, nowSeconds);
  }

  /** From a credential, keys and bundles already in memory, checked as `load` checks the files `options` names. */
  static async fromMaterial(options: LocalIdentityOptions, material: IdentityMaterial, nowSeconds = Math.floor(Date.now() / 1000)): Promise<LocalIdentity> {
    const { files } = options;
    const { credentialCompact, signKey, kex, bundles } = material;
    // Our own credential must verify under the bundles we trust, or peers would drop us.
    const credential = fromField('credential', () => verifyCredential(credentialCompact, bundles, nowSeconds, 0));
    const kexJwk = createPublicKey(kex).export({ format: 'jwk' });
    const kexRaw = Buffer.from(kexJwk.x ?? '', 'base64url');
    if (!kexRaw.equals(credential.kexRaw)) throw mismatch('keyAgreementKey', files);
    // Tokens signed with another key would be refused by every peer: refuse to start instead.
    if (!createPublicKey(signKey).equals(credential.signKey)) throw mismatch('signingKey', files);
    const identity = new LocalIdentity(options, credentialCompact, credential, signKey, kex, kexRaw, bundles);
    await identity.renew(nowSeconds);
    return identity;
  }

  async renew(nowSeconds = Math.floor(Date.now() / 1000)): Promise<void> {
    const ttl = Math.min(this.options.tokenTtlSeconds, this.credential.expiresAt - nowSeconds);
    if (ttl <= 0) throw new IdentityError('credential-expired', `identity.credential: ${this.options.files.credential} has expired; issue a new one`);
    const base = await collectAttributes(this.options.attestors);
    const defaultToken = await this.issue('default', this.options.subject, base, ttl, nowSeconds);
    // Workloads share the host-level attributes but not the host's own static labels.
    const shared = new Map([...base].filter(([, attribute]) => attribute.attestor !== 'static'));
    const byUid = new Map<number, WorkloadToken>();
    const byWorkloadNumber = new Map<number, WorkloadToken>();
    const byPort = new Map<number, WorkloadToken>();
    for (const [index, workload] of (this.options.workloads ?? []).entries()) {
      const own = await collectAttributes(workload.attestors);
      const token = await this.issue(workload.name, workload.subject, new Map([...own, ...shared]), ttl, nowSeconds);
      for (const uid of workload.uids) byUid.set(uid, token);
      if (workload.cgroups.length > 0) byWorkloadNumber.set(index + 1, token);
      for (const port of workload.ports) byPort.set(port, token);
    }
    // Swapped together, so a SYN never sees half a renewal.
    this.defaultToken = defaultToken;
    this.byUid = byUid;
    this.byWorkloadNumber = byWorkloadNumber;
    this.byPort = byPort;
    this.tokenExpiresAt = nowSeconds + ttl;
    // A renewal re-signs every address workload too.
    this.addressTokens = new WeakMap();
    if (this.addressSource !== null) await this.refreshAddresses(nowSeconds);
  }

  /** Gives address workloads (pods) their own tokens, now and whenever refreshAddresses runs. */
  async setAddressSource(source: () => AddressWorkload[]): Promise<void> {
    this.addressSource = source;
    await this.refreshAddresses();
  }

  /** Re-reads the address workloads and signs tokens for new or changed ones (serialised). */
  refreshAddresses(nowSeconds?: number): Promise<void> {
    this.addressRefresh = this.addressRefresh.then(async () => {
      const source = this.addressSource;
      if (source === null) return;
      const now = nowSeconds ?? Math.floor(Date.now() / 1000);
      const ttl = Math.max(1, this.tokenExpiresAt - now);
      const next = new Map<string, WorkloadToken>();
      for (const workload of source()) {
        let token = this.addressTokens.get(workload.attributes);
        if (token === undefined || token.subject !== workload.subject) {
          token = await this.issue(workload.name, workload.subject, new Map(workload.attributes), ttl, now);
          this.addressTokens.set(workload.attributes, token);
        }
        next.set(workload.address, token);
      }
      this.byAddress = next;
    });
    return this.addressRefresh;
  }

  /** The token of the workload at `address` (a local pod), if there is one. */
  tokenForAddress(address: string): WorkloadToken | undefined {
    return this.byAddress.get(address);
  }

  private async issue(
    name: string,
    subject: string,
    attributes: Map<string, Attribute>,
    ttlSeconds: number,
    nowSeconds: number,
  ): Promise<WorkloadToken> {
    if (!subject.startsWith(`spiffe://${this.credential.trustDomain}/`)) {
      throw new IdentityError('bad-workload', `workload ${name}: subject must be spiffe://${this.credential.trustDomain}/...`, { workload: name });
    }
    // Never assert what the credential does not allow: peers would drop every connection.
    const allowed = new Map<string, Attribute>();
    for (const [attribute, value] of attributes) {
      if (this.credential.namespaces.has(namespaceOf(attribute))) allowed.set(attribute, value);
      else this.options.onAttributeDropped?.(name, attribute);
    }
    const token = await issueIdentityToken({
      signKey: this.signKey,
      credential: this.credential,
      subject,
      attributes: allowed,
      ttlSeconds,
      nowSeconds,
    });
    const localAttributes = {
      ...Object.fromEntries([...allowed].map(([attribute, value]) => [attribute, value.value])),
      ...this.credential.node,
      'synpass.subject': subject,
      'synpass.trust-domain': this.credential.trustDomain,
      'synpass.agent': this.credential.subject,
    };
    const asPeer: VerifiedIdentity = {
      trustDomain: this.credential.trustDomain,
      subject,
      attributes: localAttributes,
      provenance: {
        ...Object.fromEntries([...allowed].map(([attribute, value]) => [attribute, value.attestor])),
        ...nodeProvenance(this.credential),
      },
      agent: this.credential.subject,
      expiresAt: Math.min(nowSeconds + ttlSeconds, this.credential.expiresAt),
    };
    return { name, subject, token, packed: packJws(token), attributes: allowed, localAttributes, asPeer };
  }

  /**
   * The token for a connection opened in the cgroup of workload number `workload` (0: none), or
   * else by a socket of `uid` (-1: unknown owner).
   */
  tokenForOwner(uid: number, workload = 0): WorkloadToken {
    return this.byWorkloadNumber.get(workload) ?? (uid >= 0 ? this.byUid.get(uid) : undefined) ?? this.defaultToken!;
  }

  /** The token for a connection accepted on local `port`. */
  tokenForPort(port: number): WorkloadToken {
    return this.byPort.get(port) ?? this.defaultToken!;
  }

  workloadTokens(): WorkloadToken[] {
    return [this.defaultToken!, ...new Set([...this.byUid.values(), ...this.byWorkloadNumber.values(), ...this.byPort.values()])];
  }

  /** Renews at two thirds of the token's life; `onError` hears failures (the old token stays). */
  startRenewal(onError: (error: unknown) => void, onRenewed: () => void): void {
    const schedule = (): void => {
      const lifetimeMs = (this.tokenExpiresAt - Date.now() / 1000) * 1000;
      this.renewal = setTimeout(() => {
        this.renew().then(onRenewed, onError).finally(schedule);
      }, Math.max(1_000, (lifetimeMs * 2) / 3));
      this.renewal.unref();
    };
    schedule();
  }

  stopRenewal(): void {
    if (this.renewal) clearTimeout(this.renewal);
  }
}
