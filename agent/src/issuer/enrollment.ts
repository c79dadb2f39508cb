// The agent's side of issuance: it makes its own keys (they never leave the host), bootstraps a
// credential from a join token, and renews it at half-life with jitter, each time with fresh
// keys, while the current credential stays in force. An unreachable issuer costs retries with
// backoff, never the current credential; only its expiry cloaks the host.
import { createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { calculateJwkThumbprint, exportJWK } from 'jose';
import { describeFileError, SynpassError } from '../errors.ts';
import { buildCredentialRequest, buildRenewalProof, type Attestation } from './credential-request.ts';
import { CREDENTIALS_PATH } from './server.ts';
import type { Logger } from '../telemetry/log.ts';
import { readCredentialFile, verifyCredential, type VerifiedCredential } from '../token/credential.ts';
import { loadTrustBundles } from '../token/trust-bundle.ts';
import { readPrivateKey, writePrivateKey } from '../identity/key-files.ts';
import type { IdentityFiles } from '../identity/local-identity.ts';
import { generateKeyPair } from '../identity/key-generation.ts';

const REQUEST_TIMEOUT_MS = 10_000;
const MAX_BACKOFF_MS = 30_000;

export type EnrollmentErrorCode = 'no-attestation' | 'refused' | 'unreachable' | 'bad-answer';

export class EnrollmentError extends SynpassError<EnrollmentErrorCode> {
  override readonly name = 'EnrollmentError';
}

/** Files that attest this node to the issuer (identity.issuer.*): at most one kind is set. */
export interface EvidenceFiles {
  /** A join token; the file is deleted once the token is spent. */
  joinToken: string | null;
  /** A projected service-account token (kubelet rotates it: read at each use). */
  kubernetesToken: string | null;
  /** An instance-identity document and the provider's signature over it (base64). */
  cloudDocument: string | null;
  cloudSignature: string | null;
}

function readText(path: string): string {
  return readFileSync(path, 'utf8').trim();
}

/** The attestation the configured files make, read now; null when none is configured. */
export function readEvidence(files: EvidenceFiles): Attestation | null {
  if (files.joinToken !== null) return { type: 'join-token', token: readText(files.joinToken) };
  if (files.kubernetesToken !== null) return { type: 'kubernetes', token: readText(files.kubernetesToken) };
  if (files.cloudDocument !== null && files.cloudSignature !== null) {
    // The document is sent byte for byte as the provider signed it.
    return { type: 'cloud-document', document: readFileSync(files.cloudDocument, 'utf8'), signature: readText(files.cloudSignature) };
  }
  return null;
}

/**
 * For `--check-config` before the first start: the credential is not there yet and will come
 * from the issuer. Says with what, or throws when no evidence can be read; null when a current
 * credential exists (the identity is then checked as usual).
 */
export function pendingEnrollment(renewer: CredentialRenewer): string | null {
  if (renewer.current() !== null) return null;
  if (renewer.lapsed()) return `the credential has expired: it is renewed with ${renewer.options.issuerUrl} at start`;
  let attestation: Attestation | null;
  try {
    attestation = readEvidence(renewer.options.evidence);
  } catch (error) {
    throw new EnrollmentError('no-attestation', `no credential yet, and its evidence cannot be read: ${describeFileError(error)}`, {}, { cause: error });
  }
  if (attestation === null) throw new EnrollmentError('no-attestation', 'no credential yet, and no evidence to get one (identity.issuer.joinToken, kubernetesToken or cloudDocument)');
  return `no credential yet: it comes from ${renewer.options.issuerUrl} by ${attestation.type} at start`;
}

export interface EnrollmentOptions {
  issuerUrl: string;
  /** PEM of the CA that signed the issuer's TLS certificate (null: the system's CAs). */
  tlsCa: string | null;
  evidence: EvidenceFiles;
  files: IdentityFiles;
  log: Logger;
  clock?: () => number;
  random?: () => number;
}

export interface RenewalStatus {
  issuer: string;
  renewals: number;
  failures: number;
  lastRenewedAt: number | null;
  nextAttemptAt: number | null;
  /** Since when renewals have failed in a row (null: the last one worked). */
  failingSince: number | null;
  lastError: string | null;
}

interface Current {
  credential: VerifiedCredential;
  signKey: KeyObject;
}

/** Writes `content` beside `path` and renames it over: a reader sees the old file or the new one. */
function replaceFile(path: string, write: (temporary: string) => void): void {
  const temporary = `${path}.next`;
  write(temporary);
  renameSync(temporary, path);
}

export class CredentialRenewer {
  readonly status: RenewalStatus;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private failuresInARow = 0;
  private readonly clock: () => number;
  private readonly random: () => number;

  constructor(readonly options: EnrollmentOptions) {
    this.clock = options.clock ?? Date.now;
    this.random = options.random ?? Math.random;
    this.status = { issuer: options.issuerUrl, renewals: 0, failures: 0, lastRenewedAt: null, nextAttemptAt: null, failingSince: null, lastError: null };
  }

  /** The credential on disk, if it verifies, is current and matches the keys beside it. */
  current(): Current | null {
    const { files } = this.options;
    try {
      const credential = verifyCredential(readCredentialFile(files.credential), loadTrustBundles(files.trustBundles), this.nowSeconds(), 0);
      const signKey = readPrivateKey(files.signingKey);
      if (!createPublicKey(signKey).equals(credential.signKey)) return null;
      return { credential, signKey };
    } catch (error) {
      if (error instanceof SynpassError) return null;
      throw error;
    }
  }

  /**
   * Before the agent loads its identity: a current credential is kept, a lapsed one renewed, and
   * otherwise the node's evidence (join token, service-account token, cloud document) buys one.
   * Waits (with backoff) while the issuer cannot be reached; a refusal is final.
   */
  async ensureCredential(): Promise<void> {
    if (this.current() !== null) return;
    // A credential that lapsed while the host was down is renewed (within the issuer's grace)
    // rather than needing new evidence: a spent join token is gone.
    const lapsed = this.readForRenewalOrNull() !== null;
    for (let attempt = 0; ; attempt++) {
      try {
        if (lapsed) await this.renewOrAttest();
        else await this.attest();
        return;
      } catch (error) {
        if (!(error instanceof EnrollmentError) || error.code !== 'unreachable' || this.stopped) throw error;
        this.noteFailure(error);
        const delay = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** attempt);
        this.options.log.warn({ err: error, retryInMs: delay }, 'issuer unreachable; retrying the join');
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  }

  /** A credential from the node's evidence (join token, service-account token, cloud document). */
  private async attest(): Promise<void> {
    const { evidence } = this.options;
    let attestation: Attestation | null;
    try {
      attestation = readEvidence(evidence);
    } catch (error) {
      throw new EnrollmentError('no-attestation', `no current credential at ${this.options.files.credential}, and its evidence cannot be read: ${describeFileError(error)} (${(error as { path?: string }).path ?? ''})`, {}, { cause: error });
    }
    if (attestation === null) {
      throw new EnrollmentError('no-attestation', `no current credential at ${this.options.files.credential}, and no evidence to get one (identity.issuer.joinToken, kubernetesToken or cloudDocument)`);
    }
    await this.requestAndStore(attestation);
    this.options.log.info({ issuer: this.options.issuerUrl, attestation: attestation.type }, 'credential obtained by node attestation');
    // Spent: a join token must not sit on disk for anyone to try again.
    if (attestation.type === 'join-token' && evidence.joinToken !== null) unlinkSync(evidence.joinToken);
  }

  /** Renews at half-life (±10 % jitter); `onRenewed` swaps the new credential in (the SIGHUP path). */
  start(onRenewed: () => Promise<void>): void {
    const schedule = (delayMs: number): void => {
      if (this.stopped) return;
      this.status.nextAttemptAt = (this.clock() + delayMs) / 1000;
      this.timer = setTimeout(() => {
        this.renewNow(onRenewed).then(
          () => { schedule(this.halfLifeDelay()); },
          () => { schedule(this.backoffDelay()); },
        );
      }, delayMs);
      this.timer.unref();
    };
    schedule(this.halfLifeDelay());
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
  }

  /** One renewal now: fresh keys, a request attested by the current credential, the swap. */
  async renewNow(onRenewed: () => Promise<void>): Promise<void> {
    try {
      await this.renewOrAttest();
      await onRenewed();
    } catch (error) {
      this.noteFailure(error);
      this.options.log.warn({ err: error, failingSince: new Date((this.status.failingSince ?? 0) * 1000).toISOString() }, 'credential renewal failed; the current credential stays in force');
      throw error;
    }
    this.status.renewals += 1;
    this.status.lastRenewedAt = this.nowSeconds();
    this.status.failingSince = null;
    this.status.lastError = null;
    this.failuresInARow = 0;
  }

  /**
   * The current credential attests the renewal. Once the issuer no longer takes it (lapsed past
   * its grace), evidence that can attest again (not a spent join token) brings the agent back.
   */
  private async renewOrAttest(): Promise<void> {
    const current = this.readForRenewal();
    try {
      await this.requestAndStore({ type: 'credential', credential: current.credential.compact, proof: '' }, current);
    } catch (error) {
      const lapsed = error instanceof EnrollmentError && error.code === 'refused' && error.context.reason === 'bad-credential';
      if (!lapsed || this.options.evidence.joinToken !== null || readEvidence(this.options.evidence) === null) throw error;
      this.options.log.warn({ err: error }, 'the issuer no longer renews the current credential; attesting the node again');
      await this.attest();
    }
  }

  /** The credential to renew with: its expiry does not matter here (the issuer allows a grace). */
  private readForRenewal(): Current {
    const { files } = this.options;
    const credential = verifyCredential(readCredentialFile(files.credential), loadTrustBundles(files.trustBundles), this.nowSeconds(), Number.MAX_SAFE_INTEGER);
    return { credential, signKey: readPrivateKey(files.signingKey) };
  }

  private async requestAndStore(attestation: Attestation, current?: Current): Promise<void> {
    const nowSeconds = this.nowSeconds();
    const sign = generateKeyPair('ed25519');
    const kex = generateKeyPair('x25519');
    if (current !== undefined && attestation.type === 'credential') {
      const thumbprint = await calculateJwkThumbprint(await exportJWK(sign.publicKey));
      attestation.proof = await buildRenewalProof(current.signKey, current.credential.signKid, thumbprint, nowSeconds);
    }
    const request = await buildCredentialRequest({ signKey: sign.privateKey, kexPublicKey: kex.publicKey, attestation, nowSeconds });
    const credential = await this.post(request);
    // The new credential must verify here before anything on disk changes.
    const verified = verifyCredential(credential, loadTrustBundles(this.options.files.trustBundles), nowSeconds, 30);
    if (!verified.signKey.equals(sign.publicKey)) throw new EnrollmentError('bad-answer', 'the issuer answered with a credential for another key');
    const { files } = this.options;
    replaceFile(files.signingKey, (path) => { writePrivateKey(path, sign.privateKey); });
    replaceFile(files.keyAgreementKey, (path) => { writePrivateKey(path, kex.privateKey); });
    replaceFile(files.credential, (path) => { writeFileSync(path, `${credential}\n`, { mode: 0o644 }); });
  }

  private post(body: string): Promise<string> {
    const url = new URL(CREDENTIALS_PATH, this.options.issuerUrl);
    const payload = JSON.stringify({ request: body });
    return new Promise((resolve, reject) => {
      const request = httpsRequest(
        url,
        {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
          timeout: REQUEST_TIMEOUT_MS,
          ...(this.options.tlsCa === null ? {} : { ca: readFileSync(this.options.tlsCa) }),
        },
        (response) => {
          const chunks: Buffer[] = [];
          response.on('data', (chunk: Buffer) => chunks.push(chunk));
          response.on('end', () => {
            let answer: { credential?: unknown; error?: unknown; message?: unknown };
            try {
              answer = JSON.parse(Buffer.concat(chunks).toString('utf8')) as typeof answer;
            } catch {
              reject(new EnrollmentError('bad-answer', `issuer answered ${response.statusCode ?? 0} without JSON`));
              return;
            }
            if (response.statusCode === 200 && typeof answer.credential === 'string') resolve(answer.credential);
            else if (response.statusCode === 403) reject(new EnrollmentError('refused', `issuer refused: ${String(answer.error)} (${String(answer.message)})`, { reason: String(answer.error) }));
            // Rate limits and server errors pass; they are retried like an outage.
            else reject(new EnrollmentError('unreachable', `issuer answered ${response.statusCode ?? 0}: ${String(answer.error)}`));
          });
        },
      );
      request.on('timeout', () => { request.destroy(new Error(`no answer within ${REQUEST_TIMEOUT_MS} ms`)); });
      request.on('error', (error) => { reject(new EnrollmentError('unreachable', `issuer ${url.origin}: ${error.message}`, {}, { cause: error })); });
      request.end(payload);
    });
  }

  private halfLifeDelay(): number {
    const current = this.readForRenewalOrNull();
    if (current === null) return 1000;
    const lifetime = current.credential.expiresAt - current.credential.issuedAt;
    const renewAt = current.credential.issuedAt + lifetime / 2 + (this.random() - 0.5) * 0.2 * lifetime;
    return Math.max(500, renewAt * 1000 - this.clock());
  }

  /** Doubles from 1 s, at most 30 s and at most an eighth of the credential's life. */
  private backoffDelay(): number {
    const current = this.readForRenewalOrNull();
    const lifetimeMs = current === null ? MAX_BACKOFF_MS : (current.credential.expiresAt - current.credential.issuedAt) * 1000;
    return Math.min(1000 * 2 ** Math.min(this.failuresInARow - 1, 15), MAX_BACKOFF_MS, Math.max(1000, lifetimeMs / 8));
  }

  /** A credential and key on disk that no longer verify as current (expired), but could renew. */
  lapsed(): boolean {
    return this.current() === null && this.readForRenewalOrNull() !== null;
  }

  private readForRenewalOrNull(): Current | null {
    try {
      return this.readForRenewal();
    } catch (error) {
      if (!(error instanceof SynpassError)) throw error;
      return null;
    }
  }

  private noteFailure(error: unknown): void {
    this.status.failures += 1;
    this.failuresInARow += 1;
    this.status.failingSince ??= this.nowSeconds();
    this.status.lastError = (error as Error).message;
  }

  private nowSeconds(): number {
    return Math.floor(this.clock() / 1000);
  }
}
