// This agent's own identity: its credential and keys (read once, never logged), the trust
// bundles it accepts, and the workload token it presents, renewed before it expires.
import { createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { packJws, type PackedJws } from '../handshake/wire.ts';
import { issueIdentityToken, type Attribute } from '../token/identity-token.ts';
import { collectAttributes, type Attestor } from './attestors.ts';
import { verifyCredential, type VerifiedCredential } from './credential.ts';
import { readPrivateKey } from './key-files.ts';
import { loadTrustBundles, type TrustBundle } from './trust-bundle.ts';

export interface IdentityFiles {
  credential: string;
  signingKey: string;
  keyAgreementKey: string;
  trustBundles: string;
}

export interface LocalIdentityOptions {
  files: IdentityFiles;
  subject: string;
  attestors: readonly Attestor[];
  tokenTtlSeconds: number;
}

export class LocalIdentity {
  token = '';
  /** Credential and token as they go on the wire, encoded once rather than per SYN. */
  packedCredential: PackedJws;
  packedToken: PackedJws = { bytes: new Uint8Array(0), signature: new Uint8Array(0) };
  tokenExpiresAt = 0;
  attributes = new Map<string, Attribute>();
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
  }

  static async load(options: LocalIdentityOptions, nowSeconds = Math.floor(Date.now() / 1000)): Promise<LocalIdentity> {
    const bundles = loadTrustBundles(options.files.trustBundles);
    const credentialCompact = readFileSync(options.files.credential, 'utf8').trim();
    // Our own credential must verify under the bundles we trust, or peers would drop us.
    const credential = verifyCredential(credentialCompact, bundles, nowSeconds, 0);
    const signKey = readPrivateKey(options.files.signingKey);
    const kex = readPrivateKey(options.files.keyAgreementKey);
    const kexJwk = createPublicKey(kex).export({ format: 'jwk' });
    const kexRaw = Buffer.from(kexJwk.x ?? '', 'base64url');
    if (!kexRaw.equals(credential.kexRaw)) throw new Error('key-agreement key does not match the credential');
    if (!options.subject.startsWith(`spiffe://${credential.trustDomain}/`)) {
      throw new Error(`workload subject must be spiffe://${credential.trustDomain}/...`);
    }
    const identity = new LocalIdentity(options, credentialCompact, credential, signKey, kex, kexRaw, bundles);
    await identity.renew(nowSeconds);
    return identity;
  }

  async renew(nowSeconds = Math.floor(Date.now() / 1000)): Promise<void> {
    this.attributes = await collectAttributes(this.options.attestors);
    const ttl = Math.min(this.options.tokenTtlSeconds, this.credential.expiresAt - nowSeconds);
    if (ttl <= 0) throw new Error('agent credential has expired');
    this.token = await issueIdentityToken({
      signKey: this.signKey,
      credential: this.credential,
      subject: this.options.subject,
      attributes: this.attributes,
      ttlSeconds: ttl,
      nowSeconds,
    });
    this.packedToken = packJws(this.token);
    this.tokenExpiresAt = nowSeconds + ttl;
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
