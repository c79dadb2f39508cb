// The Dockerfile: lint (dockerfile-utils, the VS Code Docker language server's validator) and
// its build steps checked against this tree: every COPY source exists, in the repository for the
// build context and in the built tree (scripts/setup ran the same build) for COPY --from=build,
// and the runtime stage installs every library the built addon links.
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
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

it('the runtime stage installs the Debian package of every library the built addon links', () => {
  // What node:20-bookworm-slim already has: the C and C++ runtimes Node itself needs.
  const base = /^(libc|libm|libgcc_s|libstdc\+\+|libpthread|libdl|ld-linux[\w-]*)\.so/;
  const needed = execFileSync('readelf', ['-d', `${root}native/build/Release/synpass_nfq.node`], { encoding: 'utf8' })
    .split('\n')
    .flatMap((line) => /\(NEEDED\)\s+Shared library: \[(.+)\]/.exec(line)?.[1] ?? [])
    .filter((library) => !base.test(library));
  assert.ok(needed.includes('libsodium.so.23') && needed.includes('libbpf.so.1'), `links ${needed.join(', ')}`);
  const runtime = text.slice(text.indexOf('AS runtime'));
  const installed = /apt-get install -y --no-install-recommends ([^\\&]+)/.exec(runtime)?.[1]?.trim().split(/\s+/) ?? [];
  for (const library of needed) {
    // dpkg names the package that owns the file, e.g. "libsodium23:amd64: /usr/lib/.../libsodium.so.23".
    const owner = execFileSync('dpkg', ['-S', `*/${library}`], { encoding: 'utf8' }).split(':')[0]!;
    assert.ok(installed.includes(owner), `the runtime stage does not install ${owner} (for ${library}): ${installed.join(' ')}`);
  }
});
