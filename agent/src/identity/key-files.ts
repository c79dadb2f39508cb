// Private keys live in PEM files readable by their owner only; a key file that group or others
// can read is refused rather than used, and key material never reaches a log line.
import { createPrivateKey, type KeyObject } from 'node:crypto';
import { readFileSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';

export class KeyFileError extends Error {
  override readonly name = 'KeyFileError';
  constructor(
    readonly code: 'insecure-permissions' | 'unreadable' | 'bad-key',
    message: string,
    readonly path: string,
  ) {
    super(message);
  }
}

export function readPrivateKey(path: string): KeyObject {
  let mode: number;
  try {
    mode = statSync(path).mode;
  } catch (error) {
    throw new KeyFileError('unreadable', `cannot read key file: ${(error as Error).message}`, path);
  }
  if ((mode & 0o077) !== 0) {
    throw new KeyFileError('insecure-permissions', `key file mode ${(mode & 0o777).toString(8)} lets others read it; chmod 600`, path);
  }
  try {
    return createPrivateKey(readFileSync(path));
  } catch {
    throw new KeyFileError('bad-key', 'key file does not hold a PEM private key', path);
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
