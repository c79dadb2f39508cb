// The closed set of verdict reasons and its documentation stay one list.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REASONS } from '../../../agent/src/datapath/reasons.ts';
import { ROOT } from '../../../scripts/lib/lab.ts';

describe('verdict reasons', () => {
  it('docs/operations.md has one row per reason, with its verdict and text, in the same order', () => {
    const docs = readFileSync(join(ROOT, 'docs/operations.md'), 'utf8');
    const table = /<!-- reasons table:[^\n]*-->\n\| reason[^\n]*\n\|---[^\n]*\n([\s\S]*?)<!-- end of reasons table -->/.exec(docs);
    assert.ok(table, 'the reasons table is in docs/operations.md');
    const rows = table[1]!.trim().split('\n').map((line) => /^\| `([^`]+)` \| (accept|drop) \| (.*) \|$/.exec(line)?.slice(1));
    const expected = Object.entries(REASONS).map(([reason, doc]) => [reason, doc.verdict, doc.text]);
    assert.deepEqual(rows, expected);
  });

  it('every reason is a valid Prometheus label value and flow-log word', () => {
    for (const reason of Object.keys(REASONS)) assert.match(reason, /^[a-z][a-z0-9-]*$/);
  });
});
