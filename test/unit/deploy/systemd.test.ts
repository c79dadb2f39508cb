import { it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { SHIPPED_NODE_OPTIONS } from '../../../scripts/lib/attack-lab.ts';

const unit = fileURLToPath(new URL('../../../deploy/systemd/synpass.service', import.meta.url));
const issuerUnit = fileURLToPath(new URL('../../../deploy/systemd/synpass-issuer.service', import.meta.url));

const settingOf = (text: string) => (name: string) => text.split('\n').find((line) => line.startsWith(`${name}=`))?.slice(name.length + 1);

it('systemd-analyze verify accepts the agent and issuer units without a warning', () => {
  const result = spawnSync('systemd-analyze', ['verify', unit, issuerUnit], { encoding: 'utf8' });
  assert.equal(result.error, undefined, 'systemd-analyze is installed (scripts/setup installs systemd)');
  assert.equal(result.status, 0, result.stderr);
  assert.equal(result.stderr.trim(), '');
});

it('the unit is sandboxed to BPF, NET_ADMIN and NET_RAW (bpffs writable, bpf(2) allowed), reloads with SIGHUP, counts as started once the agent runs, cleans up after a failure and keeps the fast path over a restart', () => {
  const text = readFileSync(unit, 'utf8');
  const setting = settingOf(text);
  assert.equal(setting('CapabilityBoundingSet'), 'CAP_BPF CAP_NET_ADMIN CAP_NET_RAW');
  assert.equal(setting('AmbientCapabilities'), setting('CapabilityBoundingSet'));
  // The agent's own keys and credential (identity.issuer) and its join token: /var/lib/synpass, owner only.
  assert.equal(setting('StateDirectory'), 'synpass');
  assert.equal(setting('StateDirectoryMode'), '0700');
  assert.equal(setting('ReadWritePaths'), '/sys/fs/bpf');
  assert.equal(setting('SystemCallFilter'), '@system-service bpf');
  assert.equal(setting('NoNewPrivileges'), 'yes');
  assert.equal(setting('ProtectSystem'), 'strict');
  assert.equal(setting('ProtectHome'), 'yes');
  assert.equal(setting('PrivateTmp'), 'yes');
  assert.equal(setting('ExecReload'), '/bin/kill -HUP $MAINPID');
  // A failed agent's leftovers go; a clean stop keeps the kernel fast path for the next start.
  assert.match(setting('ExecStopPost') ?? '', /^\/bin\/sh -c 'test "\$SERVICE_RESULT" = success \|\| exec .* agent cleanup'$/);
  assert.equal(setting('Environment=SYNPASS_DATAPATH_FAST_PATH_KEEP_SECONDS'), '30');
  assert.match(setting('ExecStartPre') ?? '', /--check-config$/);
  // Started only once the agent runs, so services ordered after the unit listen behind it.
  assert.match(setting('ExecStartPost') ?? '', / agent wait --socket \/run\/synpass\/agent\.sock --timeout \d+$/);
  assert.match(setting('ExecStart') ?? '', / --status-socket \/run\/synpass\/agent\.sock$/);
  assert.ok(text.includes(`Environment="NODE_OPTIONS=${SHIPPED_NODE_OPTIONS}"`), 'the heap held to the memory budget the soak measured');
});

it('the issuer unit runs as its own user with no capability, keeps key and join tokens in its state directory', () => {
  const text = readFileSync(issuerUnit, 'utf8');
  const setting = settingOf(text);
  assert.equal(setting('User'), 'synpass-issuer');
  assert.equal(setting('CapabilityBoundingSet'), '');
  assert.equal(setting('NoNewPrivileges'), 'yes');
  assert.equal(setting('ProtectSystem'), 'strict');
  assert.equal(setting('StateDirectory'), 'synpass-issuer');
  assert.match(text, /--issuing-key \/var\/lib\/synpass-issuer\/issuing\.key\.pem/);
  assert.match(text, /--join-tokens \/var\/lib\/synpass-issuer\/join-tokens/);
});
