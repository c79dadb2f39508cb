// Attestors: each yields attributes and vouches for them under its own name (provenance). An
// attribute name is "<namespace>.<key>"; the agent's credential lists the namespaces it may
// assert, so a peer rejects attributes an agent was never allowed to vouch for.
//
// A configurable attestor is an AttestorKind: its field under `attestors:` in the agent
// configuration (type, default, docs line) and how that field becomes an Attestor. Adding one is
// a new file in this folder and one line in registry.ts.
import { readFile } from 'node:fs/promises';
import type { z } from 'zod';
import type { FieldTypes } from '../../config-fields.ts';
import { SynpassError } from '../../errors.ts';
import type { Attribute } from '../../token/identity-token.ts';

export interface Attestor {
  readonly name: string;
  /** The attribute namespaces it may yield: the agent credential must list each one. */
  readonly namespaces: readonly string[];
  attest(): Promise<Map<string, Attribute>>;
}

export interface AttestorKind<Config> {
  /** Its key under `attestors:` in the agent configuration. */
  readonly key: string;
  /** The documented field, with a default that means "off". */
  field(types: FieldTypes): z.ZodType<Config>;
  /** The attestor the parsed field asks for; null when it is off. */
  create(config: Config): Attestor | null;
}

/** An AttestorKind whose field type is erased, so kinds of different fields share one list. */
export interface RegisteredAttestorKind {
  readonly key: string;
  field(types: FieldTypes): z.ZodType;
  create(config: unknown): Attestor | null;
}

/** Checks that the field and `create` agree on the config's type, then erases it for the registry. */
export function attestorKind<Config>(kind: AttestorKind<Config>): RegisteredAttestorKind {
  // The value `create` gets is what `field` parsed, so it is of type Config.
  return { key: kind.key, field: (types) => kind.field(types), create: (config) => kind.create(config as Config) };
}

export class AttestorError extends SynpassError<'bad-document'> {
  override readonly name = 'AttestorError';
}

/** The non-empty values as attributes vouched for by `attestor`. */
export function attributes(attestor: string, values: Record<string, string | undefined>): Map<string, Attribute> {
  const result = new Map<string, Attribute>();
  for (const [name, value] of Object.entries(values)) if (value !== undefined && value !== '') result.set(name, { value, attestor });
  return result;
}

export async function readJsonObject(path: string): Promise<Record<string, unknown>> {
  const value: unknown = JSON.parse(await readFile(path, 'utf8'));
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new AttestorError('bad-document', `${path}: expected a JSON object`, { path });
  return value as Record<string, unknown>;
}

/** A JSON scalar as an attribute value; anything else is left out. */
export function text(value: unknown): string | undefined {
  return typeof value === 'string' || typeof value === 'number' ? String(value) : undefined;
}

/** Runs every attestor; a later attestor never overrides an attribute an earlier one vouched for. */
export async function collectAttributes(attestors: readonly Attestor[]): Promise<Map<string, Attribute>> {
  const merged = new Map<string, Attribute>();
  for (const attestor of attestors) {
    for (const [name, attribute] of await attestor.attest()) if (!merged.has(name)) merged.set(name, attribute);
  }
  return merged;
}
