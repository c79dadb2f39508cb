// Private keys live in PEM files readable by their owner only; a key file that group or others
// can read is refused rather than used, and key material never reaches a log line. Keys are
// never silently replaced: a re-run of the key ceremony would invalidate every credential.
import { createPrivateKey, type KeyObject } from 'node:crypto';
import { existsSync, readFileSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { describeFileError, SynpassError } from '../errors.ts';

export type KeyFileErrorCode = 'insecure-permissions' | 'unreadable' | 'bad-key' | 'exists';

export class KeyFileError extends SynpassError<KeyFileErrorCode> {
  override readonly name = 'KeyFileError';
  constructor(
    code: KeyFileErrorCode,
    problem: string,
    readonly path: string,
  ) {
    super(code, `${path}: ${problem}`, { path });
  }
}

export function readPrivateKey(path: string): KeyObject {
  let mode: number;
  try {
    mode = statSync(path).mode;
  } catch (error) {
    throw new KeyFileError('unreadable', `key file ${describeFileError(error)}`, path);
  }
  if ((mode & 0o077) !== 0) {
    throw new KeyFileError('insecure-permissions', `key file mode ${(mode & 0o777).toString(8)} lets others read it; chmod 600 it`, path);
  }
  try {
    return createPrivateKey(readFileSync(path));
  } catch {
    throw new KeyFileError('bad-key', 'key file does not hold a PEM private key', path);
  }
}

/** Throws unless `overwrite`, when any of `paths` exists; checked before anything is written. */
export function refuseToOverwrite(paths: readonly string[], overwrite: boolean): void {
  if (overwrite) return;
  const existing = paths.find((path) => existsSync(path));
  if (existing !== undefined) {
    throw new KeyFileError('exists', 'already exists; replacing it would invalidate what it signed or was issued for (--force replaces it)', existing);
  }
}

export function writePrivateKey(path: string, key: KeyObject): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  writeFileSync(path, key.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
}

export function writePublicFile(path: string, content: string): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, content, { mode: 0o644 });
}
