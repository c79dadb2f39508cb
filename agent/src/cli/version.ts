// The version of the installed package, read from its package.json: the CLI runs from
// agent/src/cli (source) or dist/agent/src/cli (built and installed), so the file is found
// by walking up rather than by a fixed relative path.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export function packageVersion(): string {
  for (let directory = dirname(fileURLToPath(import.meta.url)); ; directory = dirname(directory)) {
    const candidate = join(directory, 'package.json');
    if (existsSync(candidate)) {
      const manifest = JSON.parse(readFileSync(candidate, 'utf8')) as { name?: string; version?: string };
      if (manifest.name === 'synpass' && manifest.version !== undefined) return manifest.version;
    }
    if (dirname(directory) === directory) return 'unknown';
  }
}
