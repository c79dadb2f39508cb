// Builders for documented configuration fields (zod schemas). Each field carries, in one place,
// its type and bounds, its default, how an environment variable or flag spells it, and its
// documentation line; the parser, the SYNPASS_* overrides, unknown-key checks and the docs table
// of docs/operations.md are all read off the schema these build (runtime/config.ts). Pure: paths
// are resolved against a base directory given to `fieldTypes`.
import { resolve } from 'node:path';
import { z } from 'zod';
import { parseCidr } from './cidr.ts';

/** How an override from the environment or the command line is read: a list is comma-separated. */
export type OverrideKind = 'string' | 'integer' | 'number' | 'boolean' | 'list';

export interface FieldDoc {
  docs: string;
  /** Null: the field cannot be set from the environment (structured values). */
  override: OverrideKind | null;
  /** The default as the docs table shows it. */
  defaultText: string;
}

/** The registry key under which a field's documentation is kept in zod's metadata. */
const FIELD = 'synpassField';

export function fieldDoc(schema: z.ZodType): FieldDoc | undefined {
  return (z.globalRegistry.get(schema) as Record<string, unknown> | undefined)?.[FIELD] as FieldDoc | undefined;
}

function documented<T extends z.ZodType>(schema: T, doc: FieldDoc): T {
  return schema.meta({ [FIELD]: doc });
}

/** `null` in YAML (`attestors:` with nothing under it) means the same as leaving the key out. */
function nullIsAbsent(value: unknown): unknown {
  return value === null ? undefined : value;
}

/** A mapping whose unknown keys are refused, naming the keys it knows. */
function strictMapping<Shape extends z.ZodRawShape>(shape: Shape) {
  const known = Object.keys(shape).join(', ');
  return z.strictObject(shape, { error: (issue) => (issue.code === 'unrecognized_keys' ? `one of ${known}` : 'a mapping') });
}

const integerText = (min: number, max: number) => `an integer from ${min} to ${max}`;

function nonEmptyString() {
  const error = 'a non-empty string';
  return z.string({ error }).min(1, { error });
}

function integerSchema(min: number, max: number) {
  const error = integerText(min, max);
  return z.number({ error }).int({ error }).min(min, { error }).max(max, { error });
}

function portsSchema() {
  return z.array(integerSchema(1, 65535), { error: 'a list of ports' });
}

function cidrSchema() {
  const error = 'an IP network like 10.0.0.0/8';
  return z.string({ error }).transform((value, context) => {
    try {
      return parseCidr(value);
    } catch {
      context.addIssue({ code: 'custom', message: error });
      return z.NEVER;
    }
  });
}

function stringMapSchema() {
  return z.record(z.string(), z.union([z.string(), z.number()], { error: 'a string' }).transform(String), { error: 'a mapping' });
}

/** The field builders, with paths resolved against `base` (the configuration file's directory). */
export function fieldTypes(base: string) {
  const pathSchema = () => nonEmptyString().transform((value) => resolve(base, value));
  return {
    integer: (min: number, max: number, fallback: number, docs: string, options: { defaultText?: string; check?: { test: (value: number) => boolean; error: string } } = {}) => {
      const checked = options.check === undefined ? integerSchema(min, max) : integerSchema(min, max).refine(options.check.test, { error: options.check.error });
      return documented(checked.default(fallback), { docs, override: 'integer', defaultText: options.defaultText ?? String(fallback) });
    },
    number: (min: number, max: number, fallback: number, docs: string) => {
      const error = `a number from ${min} to ${max}`;
      return documented(z.number({ error }).min(min, { error }).max(max, { error }).default(fallback), { docs, override: 'number', defaultText: String(fallback) });
    },
    boolean: (fallback: boolean, docs: string) =>
      documented(z.boolean({ error: 'true or false' }).default(fallback), { docs, override: 'boolean', defaultText: String(fallback) }),
    choice: <const Choices extends readonly [string, ...string[]]>(choices: Choices, fallback: Choices[number], docs: string, error = `one of ${choices.join(', ')}`) =>
      documented(z.enum(choices, { error }).default(fallback), { docs, override: 'string', defaultText: fallback }),
    /** A required string (no default). */
    string: (docs: string) => documented(nonEmptyString(), { docs, override: 'string', defaultText: 'required' }),
    /** An optional string, null when absent. */
    optionalString: (docs: string, check?: { pattern: RegExp; error: string }) => {
      const text = nonEmptyString();
      const checked = check === undefined ? text : text.regex(check.pattern, { error: check.error });
      return documented(checked.nullable().default(null), { docs, override: 'string', defaultText: 'off' });
    },
    /** A string with a default that the word `off` turns off (null). */
    stringOrOff: (fallback: string, docs: string, check: { pattern: RegExp; error: string }) =>
      documented(
        z
          .union([z.literal('off'), nonEmptyString().regex(check.pattern, { error: check.error })], { error: check.error })
          .transform((value) => (value === 'off' ? null : value))
          .default(fallback),
        { docs, override: 'string', defaultText: fallback },
      ),
    /** A required path, resolved against the configuration file's directory. */
    path: (docs: string) => documented(pathSchema(), { docs, override: 'string', defaultText: 'required' }),
    /** A path with an (absolute) default. */
    pathWithDefault: (fallback: string, docs: string) => documented(pathSchema().default(fallback), { docs, override: 'string', defaultText: fallback }),
    /** A path that is null unless given: off, or what `defaultText` says happens without it. */
    optionalPath: (docs: string, defaultText = 'off') => documented(pathSchema().nullable().default(null), { docs, override: 'string', defaultText }),
    /** A path with an (absolute) default that the word `off` turns off (null). */
    pathOrOff: (fallback: string, docs: string) =>
      documented(
        z
          .union([z.literal('off'), pathSchema()])
          .transform((value) => (value === 'off' ? null : value))
          .default(fallback),
        { docs, override: 'string', defaultText: fallback },
      ),
    strings: (docs: string, item = 'a list of names') =>
      documented(z.array(z.string({ error: item }), { error: item }).default([]), { docs, override: 'list', defaultText: 'none' }),
    cidrs: (docs: string) => documented(z.array(cidrSchema(), { error: 'a list of CIDRs' }).default([]), { docs, override: 'list', defaultText: 'none' }),
    stringMap: (docs: string) => documented(stringMapSchema().default({}), { docs, override: null, defaultText: 'none' }),
    /** A structured field (lists of mappings): documented, not overridable. */
    structured: <T extends z.ZodType>(schema: T, docs: string, defaultText = 'none') => documented(schema, { docs, override: null, defaultText }),
    ports: () => portsSchema(),
    /** A non-empty string inside a structured field. */
    text: nonEmptyString,
    integerValue: (min: number, max: number) => integerSchema(min, max),
    cidr: () => cidrSchema(),
    mapping: strictMapping,
    stringMapValue: () => stringMapSchema(),
    /** A section: a mapping of fields that is filled with its defaults when absent. */
    // Prefault, not default: the empty mapping is parsed, so every field in it takes its default.
    section: <Shape extends z.ZodRawShape>(shape: Shape) => z.preprocess(nullIsAbsent, strictMapping(shape).prefault({} as never)),
    /** A section that is null when absent (turning a feature on by being there). */
    optionalSection: <Shape extends z.ZodRawShape>(shape: Shape) => z.preprocess(nullIsAbsent, strictMapping(shape).optional()).transform((value) => value ?? null),
  };
}

export type FieldTypes = ReturnType<typeof fieldTypes>;
