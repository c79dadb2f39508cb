// The agent's configuration: one YAML file, SYNPASS_* environment variables and command-line
// flags, in that order of precedence, read through one schema (config-schema.ts). Validation
// names the field, where its value came from, and what was expected; relative paths are
// resolved against the file's directory.
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parse } from 'yaml';
import { z } from 'zod';
import { fieldDoc, type OverrideKind } from '../config-fields.ts';
import { SynpassError } from '../errors.ts';
import { agentConfigSchema, type AgentConfig } from './config-schema.ts';

export type {
  AgentConfig,
  AttestorConfig,
  DatapathConfig,
  FlowLogConfig,
  HandshakeConfig,
  IdentityConfig,
  KubernetesConfig,
  PolicyConfig,
  TelemetryConfig,
  WorkloadConfig,
} from './config-schema.ts';

export class ConfigError extends SynpassError<'invalid-field'> {
  override readonly name = 'ConfigError';
  constructor(
    readonly field: string,
    readonly expected: string,
    readonly file: string,
  ) {
    super('invalid-field', `${file}: ${field}: expected ${expected}`, { field, file });
  }
}

/** One documented field of the configuration (a leaf of the schema). */
export interface ConfigField {
  path: string;
  /** SYNPASS_<PATH>, or null when the field cannot be set from the environment. */
  environment: string | null;
  override: OverrideKind | null;
  defaultText: string;
  docs: string;
}

export function environmentName(path: string): string {
  return `SYNPASS_${path.replace(/\./g, '_').replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()}`;
}

/** Every documented field, in schema order: what the environment can set and the docs table. */
export function configFields(): ConfigField[] {
  const fields: ConfigField[] = [];
  const walk = (schema: z.ZodType, path: string): void => {
    const doc = fieldDoc(schema);
    if (doc !== undefined) {
      fields.push({ path, environment: doc.override === null ? null : environmentName(path), override: doc.override, defaultText: doc.defaultText, docs: doc.docs });
      return;
    }
    if (schema instanceof z.ZodObject) {
      const shape: Record<string, z.ZodType> = schema.shape;
      for (const [key, child] of Object.entries(shape)) walk(child, path === '' ? key : `${path}.${key}`);
    } else if (schema instanceof z.ZodPipe) {
      walk(schema.in as z.ZodType, path);
      walk(schema.out as z.ZodType, path);
    } else if (schema instanceof z.ZodDefault || schema instanceof z.ZodPrefault || schema instanceof z.ZodOptional || schema instanceof z.ZodNullable) {
      walk(schema.unwrap() as z.ZodType, path);
    }
  };
  walk(agentConfigSchema('/'), '');
  return fields;
}

/** The docs/operations.md table of every field (a test keeps the two equal). */
export function configTable(): string {
  const rows = configFields().map((f) => `| \`${f.path}\` | ${f.environment === null ? '-' : `\`${f.environment}\``} | ${f.defaultText} | ${f.docs} |`);
  return ['| field | environment | default | meaning |', '|---|---|---|---|', ...rows].join('\n');
}

type Json = Record<string, unknown>;

/** A value for one field and where it came from ("environment (SYNPASS_...)", "--queue"). */
export interface Override {
  path: string;
  value: unknown;
  source: string;
  /** Add to the list the field already has (a repeatable flag such as --target). */
  append?: boolean;
}

function overridable(): Map<string, OverrideKind> {
  const kinds = new Map<string, OverrideKind>();
  for (const field of configFields()) if (field.override !== null) kinds.set(field.path, field.override);
  return kinds;
}

/** The SYNPASS_* variables that name a field, typed by the field's kind. */
export function environmentOverrides(environment: NodeJS.ProcessEnv): Override[] {
  const overrides: Override[] = [];
  for (const [path, kind] of overridable()) {
    const name = environmentName(path);
    const text = environment[name];
    if (text === undefined) continue;
    const source = `environment (${name})`;
    let value: unknown = text;
    if (kind === 'integer' || kind === 'number') {
      value = text.trim() === '' ? Number.NaN : Number(text);
      if (!Number.isFinite(value) || (kind === 'integer' && !Number.isInteger(value))) {
        throw new ConfigError(`${name} (${path})`, kind === 'integer' ? 'an integer' : 'a number', 'environment');
      }
    } else if (kind === 'boolean') {
      if (text !== 'true' && text !== 'false') throw new ConfigError(`${name} (${path})`, 'true or false', 'environment');
      value = text === 'true';
    } else if (kind === 'list') {
      value = text.split(',').map((item) => item.trim()).filter(Boolean);
    }
    overrides.push({ path, value, source });
  }
  return overrides;
}

function applyOverride(root: Json, override: Override, file: string): void {
  const keys = override.path.split('.');
  let node = root;
  for (const key of keys.slice(0, -1)) {
    const next = node[key];
    if (next !== undefined && next !== null && (typeof next !== 'object' || Array.isArray(next))) {
      throw new ConfigError(key, `a mapping (to apply ${override.source})`, file);
    }
    node = (next as Json | undefined | null) ?? (node[key] = {});
  }
  const key = keys.at(-1)!;
  const existing = node[key];
  node[key] = override.append === true && Array.isArray(existing) ? [...(existing as unknown[]), ...(override.value as unknown[])] : override.value;
}

function fieldName(path: readonly PropertyKey[]): string {
  let name = '';
  for (const key of path) name += typeof key === 'number' ? `[${key}]` : `${name === '' ? '' : '.'}${String(key)}`;
  return name === '' ? '(root)' : name;
}

/** The most specific issue: a union reports each branch, and the deepest branch issue says most. */
function specific(issue: z.core.$ZodIssue): { path: PropertyKey[]; message: string; keys?: string[] } {
  if (issue.code === 'invalid_union' && issue.errors.length > 0) {
    const branch = issue.errors.flat().reduce((best, candidate) => (candidate.path.length > best.path.length ? candidate : best));
    const inner = specific(branch);
    return { ...inner, path: [...issue.path, ...inner.path] };
  }
  return { path: issue.path, message: issue.message, ...(issue.code === 'unrecognized_keys' ? { keys: issue.keys } : {}) };
}

function configError(error: z.ZodError, file: string, sources: Map<string, string>): ConfigError {
  const issue = specific(error.issues[0]!);
  const path = issue.keys === undefined ? issue.path : [...issue.path, issue.keys[0]!];
  const field = fieldName(path);
  const dotted = path.filter((key) => typeof key === 'string').join('.');
  return new ConfigError(field, issue.message, sources.get(dotted) ?? file);
}

function readDocument(file: string): unknown {
  try {
    return parse(readFileSync(file, 'utf8')) ?? {};
  } catch (error) {
    throw new ConfigError('(file)', `readable YAML (${(error as Error).message.split('\n')[0] ?? ''})`, file);
  }
}

/**
 * Reads `file` (null: no file, pass-through mode), then applies the environment and then
 * `overrides` (command-line flags), and validates the result as one configuration.
 */
export function loadAgentConfig(file: string | null, environment: NodeJS.ProcessEnv = process.env, overrides: readonly Override[] = []): AgentConfig {
  const source = file ?? '(no file)';
  const document = file === null ? { mode: 'pass-through' } : readDocument(file);
  const sources = new Map<string, string>();
  if (typeof document === 'object' && document !== null && !Array.isArray(document)) {
    const root = document as Json;
    for (const override of [...environmentOverrides(environment), ...overrides]) {
      applyOverride(root, override, source);
      sources.set(override.path, override.source);
    }
    // The identity section is required in identity mode (its fields say which are missing) and
    // not read at all in pass-through mode.
    if ((root.mode ?? 'identity') === 'identity') root.identity ??= {};
    else if (root.mode === 'pass-through') delete root.identity;
  }
  const parsed = agentConfigSchema(file === null ? process.cwd() : dirname(resolve(file))).safeParse(document);
  if (!parsed.success) throw configError(parsed.error, source, sources);
  const config = parsed.data;
  if (file !== null && typeof document === 'object' && document !== null && 'policy' in document && 'admission' in document) {
    config.warnings.push(`${source}: admission: ignored, since policy is set (the policy directory decides every connection)`);
  }
  return config;
}

/** The defaults of every field, as a configuration without file, environment or flags has them. */
export const DEFAULTS: AgentConfig = loadAgentConfig(null, {});
export const DEFAULT_DATAPATH = DEFAULTS.datapath;
export const DEFAULT_TELEMETRY = DEFAULTS.telemetry;
