// The folders of agent/src are layers: each imports only from the layers the README's Layout
// section lists before it. A new folder, or an import that reaches up, fails here.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { ROOT } from '../../../scripts/lib/lab.ts';

const SOURCE = join(ROOT, 'agent/src');

/** The layers in README order: '' for the files at the top of agent/src. */
function readmeLayers(): string[] {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const list = /<!-- layers:[^\n]*-->\n([\s\S]*?)<!-- end of layers -->/.exec(readme);
  assert.ok(list, 'the README lists the layers');
  return [...list[1]!.matchAll(/^- `agent\/src\/([a-z-]*)\/?`/gm)].map((match) => match[1]!);
}

function sourceFiles(directory: string): string[] {
  return readdirSync(directory, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? sourceFiles(join(directory, entry.name)) : entry.name.endsWith('.ts') ? [join(directory, entry.name)] : [],
  );
}

/** The layer of a file: its first folder under agent/src ('' at the top). */
function layerOf(file: string): string {
  const path = relative(SOURCE, file);
  return path.includes('/') ? path.slice(0, path.indexOf('/')) : '';
}

const POLICY_DATA = join(ROOT, 'policy');

/** The imports of `file` (its text) that reach a later layer, or leave agent/src for anything but policy/ data. */
function badImports(file: string, text: string, rank: ReadonlyMap<string, number>): string[] {
  const found: string[] = [];
  for (const match of text.matchAll(/(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+)'/g)) {
    const target = resolve(dirname(file), match[1]!);
    if (!target.startsWith(SOURCE)) {
      if (!target.startsWith(POLICY_DATA)) found.push(`${relative(ROOT, file)} -> ${relative(ROOT, target)} (outside agent/src)`);
      continue;
    }
    const from = layerOf(file);
    const to = layerOf(target);
    if ((rank.get(to) ?? Infinity) > rank.get(from)!) found.push(`${relative(ROOT, file)} (${from || 'top'}) -> ${relative(ROOT, target)} (${to})`);
  }
  return found;
}

describe('layers of agent/src', () => {
  const layers = readmeLayers();
  const rank = new Map(layers.map((layer, index) => [layer, index]));

  it('the README names every folder once', () => {
    const folders = new Set(sourceFiles(SOURCE).map(layerOf));
    assert.deepEqual([...folders].sort(), [...layers].sort());
    assert.equal(new Set(layers).size, layers.length);
  });

  it('every import reaches only the same or an earlier layer', () => {
    const found = sourceFiles(SOURCE).flatMap((file) => badImports(file, readFileSync(file, 'utf8'), rank));
    assert.deepEqual(found, []);
  });

  it('scripts import nothing from test/: the lab library they share with the tests is scripts/lib', () => {
    const scripts = join(ROOT, 'scripts');
    const found = sourceFiles(scripts).flatMap((file) =>
      [...readFileSync(file, 'utf8').matchAll(/(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+)'/g)]
        .map((match) => resolve(dirname(file), match[1]!))
        .filter((target) => target.startsWith(join(ROOT, 'test')))
        .map((target) => `${relative(ROOT, file)} -> ${relative(ROOT, target)}`),
    );
    assert.deepEqual(found, []);
  });

  it('the check reports an import that reaches up or out', () => {
    const file = join(SOURCE, 'datapath', 'example.ts');
    assert.deepEqual(badImports(file, "import { x } from '../datapath/engine.ts';\nimport { y } from '../token/jws.ts';\n", rank), []);
    assert.equal(badImports(file, "import type { AgentConfig } from '../runtime/config.ts';\n", rank).length, 1);
    assert.equal(badImports(file, "const m = await import('../../../scripts/lib/lab.ts');\n", rank).length, 1);
  });
});
