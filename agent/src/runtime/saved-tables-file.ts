// The file behind kernel/saved-tables.ts: written whole or not at all (a stop that dies midway
// leaves the previous file or none), read once and removed, so a later crash never restores it
// a second time. It names peers, and after a rotation holds the previous key-agreement key: readable
// by the agent's user only.
import { readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import type { KeptTables } from '../handshake/kernel-path.ts';
import { decodeSavedTables, SavedTablesError } from '../kernel/saved-tables.ts';

/** Far above both tables full (2 × 65,536 entries of about 1 KiB): a larger file is not ours. */
const MAX_FILE_BYTES = 128 * 1024 * 1024;

export function writeSavedTables(file: string, text: string): void {
  const partial = `${file}.partial`;
  writeFileSync(partial, text, { mode: 0o600 });
  renameSync(partial, file);
}

/** The saved table, or null when there is none; a malformed one throws SavedTablesError (and is removed too). */
export function takeSavedTables(file: string): KeptTables | null {
  const size = statSync(file, { throwIfNoEntry: false })?.size;
  if (size === undefined) return null;
  const text = size > MAX_FILE_BYTES ? null : readFileSync(file, 'utf8');
  rmSync(file, { force: true });
  if (text === null) throw new SavedTablesError('malformed', `${file}: ${size} bytes, more than a saved table can hold`, { file });
  return decodeSavedTables(text, file);
}
