// The deny list: agent credentials revoked before they expire, by credential id (`jti`) or by the
// agent's signing-key thumbprint (`cnf.sig.kid`, which also catches every credential that key
// gets later). It is a file (a ConfigMap in Kubernetes) distributed like trust bundles:
//   credentials: [<jti>, ...]
//   keys: [<thumbprint>, ...]
// Short credential lifetimes stay the main defence; the list covers the time until expiry.
import { createHash } from 'node:crypto';
import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import { parse } from 'yaml';
import { describeFileError, SynpassError } from '../errors.ts';
import type { VerifiedCredential } from './credential.ts';

const ENTRY_PATTERN = /^[A-Za-z0-9_.:-]{1,128}$/;

export class DenyListError extends SynpassError<'unreadable' | 'malformed'> {
  override readonly name = 'DenyListError';
}

export interface DenyList {
  credentials: ReadonlySet<string>;
  keys: ReadonlySet<string>;
  /** SHA-256 of the file, short: tells which list is in force. */
  revision: string;
}

export const EMPTY_DENY_LIST: DenyList = { credentials: new Set(), keys: new Set(), revision: 'none' };

function entries(value: unknown, field: string, path: string): Set<string> {
  if (value === undefined || value === null) return new Set();
  if (!Array.isArray(value) || !value.every((entry) => typeof entry === 'string' && ENTRY_PATTERN.test(entry))) {
    throw new DenyListError('malformed', `${path}: ${field} must be a list of ids (letters, digits, "_.:-")`, { path });
  }
  return new Set(value as string[]);
}

export function parseDenyList(text: string, path: string): DenyList {
  let document: unknown;
  try {
    document = parse(text);
  } catch (error) {
    throw new DenyListError('malformed', `${path}: not YAML or JSON (${(error as Error).message})`, { path }, { cause: error });
  }
  document ??= {};
  if (typeof document !== 'object' || Array.isArray(document)) throw new DenyListError('malformed', `${path}: must be a mapping with credentials and keys`, { path });
  const { credentials, keys, ...rest } = document as Record<string, unknown>;
  const unknown = Object.keys(rest);
  if (unknown.length > 0) throw new DenyListError('malformed', `${path}: unknown field ${unknown.join(', ')} (credentials, keys)`, { path });
  return {
    credentials: entries(credentials, 'credentials', path),
    keys: entries(keys, 'keys', path),
    revision: createHash('sha256').update(text).digest('hex').slice(0, 12),
  };
}

export function readDenyList(path: string): DenyList {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new DenyListError('unreadable', `${path}: deny list ${describeFileError(error)}`, { path }, { cause: error });
  }
  return parseDenyList(text, path);
}

/**
 * Reads the list again whenever the file changes (polled: a ConfigMap update swaps a symlink,
 * which inotify on the file does not see). A broken new list is reported and the old one stays.
 */
export function watchDenyList(path: string, onList: (list: DenyList) => void, onError: (error: DenyListError) => void, intervalMs = 1000): () => void {
  const listener = (): void => {
    try {
      onList(readDenyList(path));
    } catch (error) {
      if (!(error instanceof DenyListError)) throw error;
      onError(error);
    }
  };
  watchFile(path, { interval: intervalMs, persistent: false }, listener);
  return () => { unwatchFile(path, listener); };
}

/** Why `credential` is denied ('credential' or 'key'), or null. */
export function denialOf(list: DenyList, credential: VerifiedCredential): 'credential' | 'key' | null {
  if (credential.jti !== null && list.credentials.has(credential.jti)) return 'credential';
  return list.keys.has(credential.signKid) ? 'key' : null;
}
