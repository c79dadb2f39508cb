import { it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const probe = fileURLToPath(new URL('../../support/parse-allocation-probe.ts', import.meta.url));

it('parsing does not allocate per packet', () => {
  // A fresh process with a young generation large enough that no scavenge runs mid-measurement.
  const output = execFileSync(
    process.execPath,
    ['--max-semi-space-size=64', '--min-semi-space-size=64', '--import', 'tsx', probe],
    { encoding: 'utf8' },
  );
  const result = JSON.parse(output) as { packets: number; parsed: number; bytesPerPacket: number };
  assert.equal(result.parsed, result.packets);
  // One small object per packet would show as 16+ bytes; the probe reads ~0.01.
  assert.ok(result.bytesPerPacket < 1, `parser allocated ${result.bytesPerPacket} bytes per packet`);
});
