// Temporary directories for tests, removed when the test process exits, whether the test passed,
// failed or threw: a test run leaves nothing behind in the temporary directory.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const made = new Set<string>();
process.on('exit', () => {
  for (const directory of made) rmSync(directory, { recursive: true, force: true });
});

/** A new empty directory `<tmp>/synpass-<name>-XXXXXX`, removed at exit. */
export function scratchDirectory(name: string): string {
  const directory = mkdtempSync(join(tmpdir(), `synpass-${name}-`));
  made.add(directory);
  return directory;
}
