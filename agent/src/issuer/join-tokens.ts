// Join tokens: single-use, expiring secrets by which a VM or bare-metal agent proves it was meant
// to join. The store is a directory shared by every issuer replica (no database): one record per
// token holding only the SHA-256 of its secret, and one marker file per use or revocation. Single
// use holds across replicas because a use is recorded by an exclusive create (O_EXCL), which the
// file system grants to exactly one caller, also on a shared volume (NFSv3 and later).
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { SynpassError } from '../errors.ts';

const TOKEN_PREFIX = 'synpass-join';
const ID_PATTERN = /^[0-9a-f]{16}$/;
const AGENT_PATTERN = /^[A-Za-z0-9._-]{1,128}$/;

export type JoinTokenErrorCode = 'malformed-join-token' | 'unknown-join-token' | 'join-token-expired' | 'join-token-revoked' | 'join-token-used';

export class JoinTokenError extends SynpassError<JoinTokenErrorCode> {
  override readonly name = 'JoinTokenError';
}

export interface JoinTokenRecord {
  id: string;
  /** The agent name the credential gets: spiffe://<domain>/agent/join/<agent>. */
  agent: string;
  namespaces: string[];
  createdAt: number;
  expiresAt: number;
  /** SHA-256 of the secret, hex. */
  sha256: string;
}

export type JoinTokenState = 'unused' | 'used' | 'expired' | 'revoked';

export interface CreateJoinTokenInput {
  agent: string;
  namespaces: string[];
  ttlSeconds: number;
  nowSeconds: number;
}

function digest(secret: string): Buffer {
  return createHash('sha256').update(secret).digest();
}

export class JoinTokenStore {
  constructor(readonly directory: string) {}

  /** Writes the record and returns the token, which is shown once and stored nowhere. */
  create(input: CreateJoinTokenInput): { token: string; record: JoinTokenRecord } {
    if (!AGENT_PATTERN.test(input.agent)) throw new RangeError('agent name may hold letters, digits, ".", "_" and "-" (at most 128)');
    mkdirSync(this.directory, { recursive: true, mode: 0o700 });
    const id = randomBytes(8).toString('hex');
    const secret = randomBytes(32).toString('base64url');
    const record: JoinTokenRecord = {
      id,
      agent: input.agent,
      namespaces: input.namespaces,
      createdAt: input.nowSeconds,
      expiresAt: input.nowSeconds + input.ttlSeconds,
      sha256: digest(secret).toString('hex'),
    };
    writeFileSync(this.path(id, 'json'), `${JSON.stringify(record)}\n`, { mode: 0o600, flag: 'wx' });
    return { token: `${TOKEN_PREFIX}.${id}.${secret}`, record };
  }

  list(nowSeconds: number): (JoinTokenRecord & { state: JoinTokenState })[] {
    let names: string[];
    try {
      names = readdirSync(this.directory);
    } catch {
      return [];
    }
    return names
      .filter((name) => name.endsWith('.json'))
      .map((name) => this.read(name.slice(0, -'.json'.length)))
      .filter((record): record is JoinTokenRecord => record !== null)
      .sort((a, b) => a.createdAt - b.createdAt)
      .map((record) => ({ ...record, state: this.state(record, nowSeconds) }));
  }

  /** Marks a token revoked; false when there is no such token. */
  revoke(id: string): boolean {
    if (!ID_PATTERN.test(id) || this.read(id) === null) return false;
    writeFileSync(this.path(id, 'revoked'), `${new Date().toISOString()}\n`, { mode: 0o600 });
    return true;
  }

  /**
   * Spends the token for the key `keyThumbprint`. Every check comes before the use is recorded,
   * so a refused attempt does not burn a token; the exclusive create decides between racers.
   */
  redeem(token: string, keyThumbprint: string, nowSeconds: number): JoinTokenRecord {
    const [prefix, id, secret, ...rest] = token.trim().split('.');
    if (prefix !== TOKEN_PREFIX || id === undefined || !ID_PATTERN.test(id) || secret === undefined || secret === '' || rest.length > 0) {
      throw new JoinTokenError('malformed-join-token', 'not a synpass join token');
    }
    const record = this.read(id);
    // An unknown id and a wrong secret read the same, so the answer does not confirm ids.
    if (record === null || !timingSafeEqual(digest(secret), Buffer.from(record.sha256, 'hex'))) {
      throw new JoinTokenError('unknown-join-token', 'no such join token', { id });
    }
    const state = this.state(record, nowSeconds);
    if (state !== 'unused') throw new JoinTokenError(`join-token-${state}`, `join token ${id} is ${state}`, { id, agent: record.agent });
    try {
      writeFileSync(this.path(id, 'used'), `${JSON.stringify({ usedAt: nowSeconds, key: keyThumbprint })}\n`, { mode: 0o600, flag: 'wx' });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EEXIST') throw new JoinTokenError('join-token-used', `join token ${id} is used`, { id, agent: record.agent });
      throw error;
    }
    return record;
  }

  private state(record: JoinTokenRecord, nowSeconds: number): JoinTokenState {
    if (existsSync(this.path(record.id, 'revoked'))) return 'revoked';
    if (existsSync(this.path(record.id, 'used'))) return 'used';
    return record.expiresAt <= nowSeconds ? 'expired' : 'unused';
  }

  private read(id: string): JoinTokenRecord | null {
    try {
      const record = JSON.parse(readFileSync(this.path(id, 'json'), 'utf8')) as JoinTokenRecord;
      return record.id === id && typeof record.sha256 === 'string' && /^[0-9a-f]{64}$/.test(record.sha256) ? record : null;
    } catch {
      return null;
    }
  }

  private path(id: string, kind: 'json' | 'used' | 'revoked'): string {
    return join(this.directory, `${id}.${kind}`);
  }
}
