import { it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { SHIPPED_NODE_OPTIONS } from '../../../scripts/lib/attack-lab.ts';

const unit = fileURLToPath(new URL('../../../deploy/systemd/synpass.service', import.meta.url));

it('systemd-analyze verify accepts the unit without a warning', () => {
  const result = spawnSync('systemd-analyze', ['verify', unit], { encoding: 'utf8' });
  assert.equal(result.error, undefined, 'systemd-analyze is installed (scripts/setup installs systemd)');
  assert.equal(result.status, 0, result.stderr);
  assert.equal(result.stderr.trim(), '');
});

it('the unit is sandboxed to BPF, NET_ADMIN and NET_RAW (bpffs writable, bpf(2) allowed), reloads with SIGHUP and cleans up after itself', () => {
  const text = readFileSync(unit, 'utf8');
  const setting = (name: string) => text.split('\n').find((line) => line.startsWith(`${name}=`))?.slice(name.length + 1);
  assert.equal(setting('CapabilityBoundingSet'), 'CAP_BPF CAP_NET_ADMIN CAP_NET_RAW');
  assert.equal(setting('ReadWritePaths'), '/sys/fs/bpf');
  assert.equal(setting('SystemCallFilter'), '@system-service bpf');
  assert.equal(setting('NoNewPrivileges'), 'yes');
  assert.equal(setting('ProtectSystem'), 'strict');
  assert.equal(setting('ProtectHome'), 'yes');
  assert.equal(setting('PrivateTmp'), 'yes');
  assert.equal(setting('ExecReload'), '/bin/kill -HUP $MAINPID');
  assert.match(setting('ExecStopPost') ?? '', /agent cleanup$/);
  assert.match(setting('ExecStartPre') ?? '', /--check-config$/);
  assert.ok(text.includes(`Environment="NODE_OPTIONS=${SHIPPED_NODE_OPTIONS}"`), 'the heap held to the memory budget the soak measured');
});
