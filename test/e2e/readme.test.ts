// The README as a new user meets it: the packed tarball installed with `npm install -g` (into a
// scratch prefix), then every block of "Using it" marked readme-test, run in order in an empty
// directory with that installed synpass first on PATH. A snippet that stops working fails here.
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from '../../scripts/lib/lab.ts';
import { scratchDirectory } from '../../scripts/lib/scratch.ts';

const README = readFileSync(join(ROOT, 'README.md'), 'utf8');
const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };

/** The shell blocks that follow a `<!-- readme-test -->` line, in README order. */
function markedBlocks(markdown: string): string[] {
  return [...markdown.matchAll(/^<!-- readme-test -->\n```sh\n([\s\S]*?)^```$/gm)].map((match) => match[1]!);
}

describe('README', () => {
  let prefix: string;
  let installed: string;
  /** PATH with the installed synpass first; the caller's SYNPASS_* variables would configure agents. */
  let env: NodeJS.ProcessEnv;

  before(() => {
    const scratch = scratchDirectory('readme-install');
    prefix = join(scratch, 'prefix');
    // `npm pack` runs prepack (the TypeScript build) as a user's pack in the clone does.
    execFileSync('npm', ['pack', '--silent', '--pack-destination', scratch], { cwd: ROOT, stdio: 'pipe' });
    execFileSync('npm', ['install', '-g', '--prefix', prefix, '--no-audit', '--no-fund', '--loglevel=error', join(scratch, `synpass-${version}.tgz`)], {
      cwd: scratch,
      stdio: 'pipe',
    });
    installed = join(prefix, 'lib', 'node_modules', 'synpass');
    env = {
      ...Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('SYNPASS_'))),
      PATH: `${join(prefix, 'bin')}:${process.env.PATH ?? ''}`,
    };
  });

  it('npm install -g of the packed tarball gives a synpass command with its addon built', () => {
    assert.match(README, new RegExp(`npm install -g \\./synpass-${version.replaceAll('.', '\\.')}\\.tgz`), 'the README names this version');
    assert.equal(execFileSync('synpass', ['--version'], { env, encoding: 'utf8' }).trim(), version);
    assert.equal(execFileSync('sh', ['-c', 'command -v synpass'], { env, encoding: 'utf8' }).trim(), join(prefix, 'bin', 'synpass'));
    // The addon was compiled on install and loads from the installed package.
    const loader = join(installed, 'dist', 'agent', 'src', 'native', 'addon.js');
    const counters = execFileSync(process.execPath, ['--input-type=module', '-e', `const m = await import(${JSON.stringify(loader)}); console.log(m.loadBinding().COUNTER_COUNT);`], {
      encoding: 'utf8',
    });
    assert.ok(Number(counters) > 0);
  });

  it('the "Using it" blocks run as they stand, in order, in an empty directory', () => {
    const blocks = markedBlocks(README);
    assert.ok(blocks.length >= 4, `found ${blocks.length} readme-test blocks`);
    const work = scratchDirectory('readme-using-it');
    // stdin from /dev/null: on a socket (node's default pipe) Debian's bash takes itself for an
    // ssh session and reads /etc/bash.bashrc.
    const run = spawnSync('bash', ['-euo', 'pipefail', '-c', blocks.join('\n')], { cwd: work, env, encoding: 'utf8', timeout: 120_000, stdio: ['ignore', 'pipe', 'pipe'] });
    assert.equal(run.status, 0, `a README block failed:\n${run.stdout}\n${run.stderr}`);
    assert.match(run.stdout, /^agent spiffe:\/\/prod\.example\.com\/agent\/web-1: .*\(namespaces: app, env, host, process\)$/m);
    assert.match(run.stdout, /"verified": true/);
    assert.match(run.stdout, /^issuer issuer-1 certified until \d{4}-.* in (\.\/)?domain\/prod\.example\.com\.jwks\.json/m);
    assert.match(run.stdout, /"agent": "vm-7",\n\s+"namespaces": \[\n\s+"app",\n\s+"env",\n\s+"host",\n\s+"process"\n\s+\],\n\s+"state": "unused"/);
    assert.match(run.stdout, /^2 passed, 0 failed$/m);
    assert.match(run.stdout, /^ALLOW /m);
    assert.match(run.stdout, /^configuration ok: mode identity, policy sha256:/m);
    assert.equal(run.stderr, '', 'no warning either');
  });
});
