// Reads a policy directory: YAML parsing, JSON Schema validation (ajv, against the schema shipped
// in policy/), and the checks a schema cannot express. Every problem names file:line:column.
// Pure apart from reading the files, so `validate` in CI and the agent's reload agree.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { Ajv, type ErrorObject } from 'ajv';
import { isMap, isPair, isScalar, LineCounter, parseDocument, type Document } from 'yaml';
import { isIP } from 'node:net';
import schema from '../../../policy/policy.schema.json' with { type: 'json' };
import { describeFileError, SynpassError } from '../errors.ts';
import { unknownAttribute } from './attributes.ts';
import type { PolicyDocument, RuleDocument, Selector } from './model.ts';

export const MAX_FILE_BYTES = 1024 * 1024;

/** The directory itself cannot be read; problems inside its files are `Problem`s instead. */
export class PolicyDirectoryError extends SynpassError<'unreadable'> {
  override readonly name = 'PolicyDirectoryError';
  constructor(
    readonly directory: string,
    cause: unknown,
  ) {
    super('unreadable', `${directory}: policy directory ${describeFileError(cause)}`, { directory }, { cause });
  }
}

export interface Problem {
  file: string;
  line: number;
  column: number;
  message: string;
}

export interface LoadedFile {
  file: string;
  document: PolicyDocument;
  /** Position of a value by its path inside the document. */
  positionOf(path: readonly (string | number)[]): { line: number; column: number };
}

export interface LoadResult {
  files: LoadedFile[];
  problems: Problem[];
  /** sha256 over file names and contents: the policy set's revision unless git knows better. */
  contentHash: string;
}

const ajv = new Ajv({ allErrors: true, strict: false });
const validateSchema = ajv.compile(schema);

function locate(doc: Document, counter: LineCounter, path: readonly (string | number)[], key?: string) {
  let node: unknown = doc.getIn(path, true);
  if (key !== undefined && isMap(node)) {
    const pair = node.items.find((item) => isPair(item) && isScalar(item.key) && item.key.value === key);
    if (pair && isPair(pair)) node = pair.key;
  }
  const range = (node as { range?: [number, number, number] } | undefined)?.range ?? doc.contents?.range;
  const position = counter.linePos(range?.[0] ?? 0);
  return { line: position.line, column: position.col };
}

function schemaMessage(error: ErrorObject): string {
  const params = error.params as Record<string, unknown>;
  switch (error.keyword) {
    case 'additionalProperties':
      return `unknown field "${String(params.additionalProperty)}"`;
    case 'required':
      return `missing field "${String(params.missingProperty)}"`;
    case 'enum':
      return `expected one of ${(params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
    case 'type':
      return `expected ${String(params.type)}`;
    case 'pattern':
      return `does not match ${String(params.pattern)}`;
    default:
      return error.message ?? error.keyword;
  }
}

function pathOf(instancePath: string): (string | number)[] {
  return instancePath
    .split('/')
    .slice(1)
    .map((part) => part.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((part) => (/^\d+$/.test(part) ? Number(part) : part));
}

/** Checks beyond the schema: attributes, CIDRs, rule shape, contradictions. */
function semanticProblems(document: PolicyDocument, report: (path: (string | number)[], message: string, key?: string) => void): void {
  const checkSelector = (selector: Selector | undefined, path: (string | number)[]) => {
    for (const name of Object.keys(selector ?? {})) {
      const unknown = unknownAttribute(name);
      if (unknown !== null) report(path, unknown, name);
    }
  };
  const checkNetworks = (networks: string[] | undefined, path: (string | number)[]) => {
    networks?.forEach((cidr, i) => {
      const [address, prefix] = cidr.split('/');
      const family = isIP(address ?? '');
      if (family === 0 || Number(prefix) > (family === 4 ? 32 : 128)) report([...path, i], `"${cidr}" is not an IP network`);
    });
  };
  document.policies?.forEach((policy, p) => {
    checkSelector(policy.selector, ['policies', p, 'selector']);
    for (const direction of ['ingress', 'egress'] as const) {
      const peer = direction === 'ingress' ? 'from' : 'to';
      const networks = direction === 'ingress' ? 'fromNetworks' : 'toNetworks';
      const wrongPeer = direction === 'ingress' ? 'to' : 'from';
      const wrongNetworks = direction === 'ingress' ? 'toNetworks' : 'fromNetworks';
      const seen = new Map<string, { index: number; rule: RuleDocument }>();
      const names = new Set<string>();
      policy[direction]?.forEach((rule, r) => {
        const path = ['policies', p, direction, r];
        if (rule[wrongPeer] !== undefined || rule[wrongNetworks] !== undefined) {
          report(path, `${direction} rules name the peer with "${peer}"/"${networks}", not "${wrongPeer}"/"${wrongNetworks}"`);
        }
        if (rule[peer] === undefined && rule[networks] === undefined) {
          report(path, `a rule needs "${peer}" (peers with an identity; {} for any) or "${networks}" (peers without one)`);
        }
        checkSelector(rule[peer], [...path, peer]);
        checkNetworks(rule[networks], [...path, networks]);
        const name = rule.name ?? `${direction}-${r}`;
        if (names.has(name)) report([...path, 'name'], `rule name "${name}" is used twice in policy ${policy.name}`);
        names.add(name);
        const match = JSON.stringify([rule[peer] ?? null, rule[networks] ?? null, [...(rule.ports ?? [])].sort((a, b) => a - b)]);
        const earlier = seen.get(match);
        if (earlier !== undefined) {
          report(
            path,
            earlier.rule.action === rule.action
              ? `duplicate of rule ${earlier.index} (same peers and ports)`
              : `contradicts rule ${earlier.index}: same peers and ports, opposite action; it can never apply`,
          );
        } else {
          seen.set(match, { index: r, rule });
        }
      });
    }
  });
  document.tests?.forEach((test, t) => {
    for (const side of ['from', 'to'] as const) {
      for (const name of Object.keys(test[side])) {
        const unknown = unknownAttribute(name);
        if (unknown !== null) report(['tests', t, side], unknown, name);
      }
    }
  });
}

function readFile(directory: string, path: string, problems: Problem[]): { file: LoadedFile; text: string } | null {
  const file = relative(directory, path) || path;
  if (statSync(path).size > MAX_FILE_BYTES) {
    problems.push({ file, line: 1, column: 1, message: `larger than ${MAX_FILE_BYTES} bytes` });
    return null;
  }
  const text = readFileSync(path, 'utf8');
  const counter = new LineCounter();
  const doc = parseDocument(text, { lineCounter: counter, uniqueKeys: true, prettyErrors: false });
  if (doc.errors.length > 0) {
    for (const error of doc.errors) {
      const position = counter.linePos(error.pos[0]);
      problems.push({ file, line: position.line, column: position.col, message: error.message.split('\n')[0] ?? error.code });
    }
    return null;
  }
  const value: unknown = doc.toJS() ?? {};
  const found: Problem[] = [];
  const report = (path: (string | number)[], message: string, key?: string) => {
    found.push({ file, ...locate(doc, counter, path, key), message });
  };
  if (!validateSchema(value)) {
    // oneOf reports every branch; the specific errors underneath say more.
    for (const error of (validateSchema.errors ?? []).filter((e) => e.keyword !== 'oneOf' && e.keyword !== 'if')) {
      const additional = error.keyword === 'additionalProperties' ? (error.params as { additionalProperty: string }).additionalProperty : undefined;
      report(pathOf(error.instancePath), schemaMessage(error), additional);
    }
  } else {
    semanticProblems(value as PolicyDocument, report);
  }
  problems.push(...found);
  if (found.length > 0) return null;
  return {
    file: { file, document: value as PolicyDocument, positionOf: (path) => locate(doc, counter, path) },
    text,
  };
}

/** Every `*.yaml`/`*.yml` under `directory` (sorted, recursive). */
export function policyFiles(directory: string): string[] {
  const found: string[] = [];
  for (const entry of readdirSync(directory, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
    // Hidden entries are not policy: a Kubernetes ConfigMap volume keeps every file twice, under
    // its visible name and in a hidden "..<timestamp>" directory.
    if (entry.name.startsWith('.')) continue;
    const path = join(directory, entry.name);
    if (entry.isDirectory()) found.push(...policyFiles(path));
    else if (/\.ya?ml$/.test(entry.name)) found.push(path);
  }
  return found;
}

export function loadPolicyDirectory(directory: string): LoadResult {
  try {
    if (!statSync(directory).isDirectory()) throw Object.assign(new Error('not a directory'), { code: 'ENOTDIR' });
  } catch (error) {
    throw new PolicyDirectoryError(directory, error);
  }
  const problems: Problem[] = [];
  const files: LoadedFile[] = [];
  const hash = createHash('sha256');
  const policyNames = new Map<string, string>();
  for (const path of policyFiles(directory)) {
    const loaded = readFile(directory, path, problems);
    if (loaded === null) continue;
    hash.update(loaded.file.file).update('\0').update(loaded.text).update('\0');
    loaded.file.document.policies?.forEach((policy, p) => {
      const where = policyNames.get(policy.name);
      if (where !== undefined) {
        problems.push({
          file: loaded.file.file,
          ...loaded.file.positionOf(['policies', p, 'name']),
          message: `policy name "${policy.name}" is already used in ${where}`,
        });
      } else {
        policyNames.set(policy.name, loaded.file.file);
      }
    });
    files.push(loaded.file);
  }
  return { files, problems, contentHash: hash.digest('hex').slice(0, 12) };
}

export function formatProblem(problem: Problem): string {
  return `${problem.file}:${problem.line}:${problem.column}: ${problem.message}`;
}
