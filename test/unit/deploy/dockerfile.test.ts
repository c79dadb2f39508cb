// The Dockerfile: lint (dockerfile-utils, the VS Code Docker language server's validator) and
// its build steps checked against this tree: every COPY source exists, in the repository for the
// build context and in the built tree (scripts/setup ran the same build) for COPY --from=build.
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { SHIPPED_NODE_OPTIONS } from '../../../scripts/lib/attack-lab.ts';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const text = readFileSync(`${root}Dockerfile`, 'utf8');
const linter = createRequire(import.meta.url)('dockerfile-utils') as { validate: (content: string) => { message: string }[] };
const validate = (content: string) => linter.validate(content);

it('the Dockerfile lints clean, and the linter does catch mistakes', () => {
  assert.deepEqual(validate(text).map((d) => d.message), []);
  assert.ok(validate('FROM x\nCOPY\n').length > 0);
});

it('every COPY source exists: the build context in the repository, build outputs in the built tree', () => {
  const copies = text
    .split('\n')
    .filter((line) => line.startsWith('COPY '))
    .map((line) => line.slice(5).trim().split(/\s+/));
  assert.ok(copies.length >= 8);
  for (const parts of copies) {
    const fromBuild = parts[0] === '--from=build';
    const sources = (fromBuild ? parts.slice(1) : parts).slice(0, -1);
    for (const source of sources) {
      const path = fromBuild ? source.replace(/^\/src\//, root) : `${root}${source}`;
      assert.ok(existsSync(path), `${fromBuild ? 'build output' : 'context file'} missing: ${source}`);
    }
  }
  // The entry point the image runs is what `npm run build` produced.
  assert.ok(existsSync(`${root}dist/agent/src/cli/main.js`));
  assert.match(text, /ENTRYPOINT \["node", "\/opt\/synpass\/dist\/agent\/src\/cli\/main\.js"\]/);
});

it('the image holds the agent heap to its memory budget', () => {
  assert.ok(text.includes(`ENV NODE_OPTIONS="${SHIPPED_NODE_OPTIONS}"`));
});
