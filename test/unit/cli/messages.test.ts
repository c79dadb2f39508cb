// What a person sees when something is wrong: one line on stderr naming the file and field,
// exit 2, no stack trace and no log line; definite answers exit 0 or 1 (README, "Exit status").
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runSynpass, type CliResult } from '../../support/cli.ts';
import { ROOT } from '../../../scripts/lib/lab.ts';
import { scratchDirectory } from '../../../scripts/lib/scratch.ts';

const DOMAIN = 'prod.example.com';
const EXAMPLES = join(ROOT, 'policy/examples/three-tier');

/** Exit 2 and exactly one line on stderr, matching `pattern`, with nothing on stdout. */
function assertOneLineError(result: CliResult, pattern: RegExp): void {
  assert.equal(result.code, 2, `exit 2, got ${result.code}: ${result.stderr}`);
  const lines = result.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `one line, got:\n${result.stderr}`);
  assert.match(lines[0]!, pattern);
  assert.doesNotMatch(result.stderr, /^\s+at /m, 'no stack trace');
  assert.equal(result.stdout, '', 'no log line on stdout');
}

function agentConfig(fields: { trustBundles?: string; extra?: string } = {}): string {
  return [
    'identity:',
    `  subject: spiffe://${DOMAIN}/web`,
    '  credential: ./agent/credential.jwt',
    '  signingKey: ./agent/sign.key.pem',
    '  keyAgreementKey: ./agent/kex.key.pem',
    `  trustBundles: ${fields.trustBundles ?? './bundles'}`,
    'attestors: { static: { app.name: web }, host: true, env: [DEPLOY_ZONE] }',
    'workloads: [{ name: batch, subject: spiffe://prod.example.com/batch, uids: [1001], attributes: { team.name: jobs } }]',
    fields.extra ?? '',
  ].join('\n');
}

describe('synpass CLI messages', () => {
  let directory: string;
  const inDirectory = (args: string[]): CliResult => runSynpass(args, { cwd: directory });
  const write = (name: string, text: string): string => {
    writeFileSync(join(directory, name), text);
    return name;
  };

  before(() => {
    directory = scratchDirectory('cli');
    assert.equal(inDirectory(['keys', 'init-domain', '--domain', DOMAIN, '--out', 'domain']).code, 0);
    assert.equal(inDirectory(['keys', 'issue-agent', '--domain', DOMAIN, '--domain-dir', 'domain', '--agent', 'web-1', '--namespaces', 'app,host,env,process,team', '--out', 'agent']).code, 0);
    mkdirSync(join(directory, 'bundles'));
    writeFileSync(join(directory, 'bundles', `${DOMAIN}.jwks.json`), readFileSync(join(directory, 'domain', `${DOMAIN}.jwks.json`)));
  });

  it('--version prints the package version', () => {
    const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    const result = runSynpass(['--version']);
    assert.equal(result.code, 0);
    assert.equal(result.stdout.trim(), version);
  });

  it('a configuration that loads says so', () => {
    const result = inDirectory(['agent', 'run', '--config', write('good.yaml', agentConfig()), '--check-config']);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, 'configuration ok: mode identity, no policy directory\n');
  });

  it('--check-config with no configuration says there is nothing to check', () => {
    assertOneLineError(inDirectory(['agent', 'run', '--check-config']), /^synpass agent run: no configuration to check: give --config FILE/);
  });

  it('a missing trust-bundle directory names the field and the directory', () => {
    const result = inDirectory(['agent', 'run', '--config', write('no-bundles.yaml', agentConfig({ trustBundles: './nowhere' })), '--check-config']);
    assertOneLineError(result, /^synpass agent run: identity\.trustBundles: \S+\/nowhere: trust-bundle directory does not exist$/);
  });

  it('a key file others can read names the key and the fix', () => {
    const key = join(directory, 'agent', 'sign.key.pem');
    chmodSync(key, 0o644);
    try {
      const result = inDirectory(['agent', 'run', '--config', write('open-key.yaml', agentConfig()), '--check-config']);
      assertOneLineError(result, /^synpass agent run: identity\.signingKey: \S+\/agent\/sign\.key\.pem: key file mode 644 lets others read it; chmod 600 it$/);
    } finally {
      chmodSync(key, 0o600);
    }
  });

  it('a configuration of the wrong type names the file and the field, without a log line or stack', () => {
    assertOneLineError(inDirectory(['agent', 'run', '--config', write('list.yaml', '- a list\n'), '--check-config']), /^synpass agent run: list\.yaml: \(root\): expected a mapping$/);
    assertOneLineError(inDirectory(['agent', 'run', '--config', write('datapath.yaml', 'mode: pass-through\ndatapath: 5\n')]), /^synpass agent run: datapath\.yaml: datapath: expected a mapping$/);
    assertOneLineError(inDirectory(['agent', 'run', '--config', write('mode.yaml', 'mode: 5\n'), '--check-config']), /mode\.yaml: mode: expected "identity" or "pass-through"$/);
  });

  it('a policy directory that does not exist is named, by the agent and by policy validate', () => {
    const result = inDirectory(['agent', 'run', '--config', write('no-policy.yaml', agentConfig({ extra: 'policy: { directory: ./policy-gone }' })), '--check-config']);
    assertOneLineError(result, /^synpass agent run: policy\.directory: \S+\/policy-gone: policy directory does not exist$/);
    assertOneLineError(runSynpass(['policy', 'validate', '/nonexistent']), /^synpass policy validate: \/nonexistent: policy directory does not exist$/);
  });

  it('policy together with admission warns that admission is ignored', () => {
    mkdirSync(join(directory, 'policy'), { recursive: true });
    const config = write('both.yaml', agentConfig({ extra: 'policy: { directory: ./policy }\nadmission: { protectedPorts: all }' }));
    const result = inDirectory(['agent', 'run', '--config', config, '--check-config']);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, /^synpass agent run: warning: both\.yaml: admission: ignored, since policy is set/);
    assert.match(result.stdout, /^configuration ok: mode identity, policy /);
  });

  it('issue-agent names a missing domain bundle and says which directory it wants', () => {
    const result = inDirectory(['keys', 'issue-agent', '--domain', 'other.example', '--domain-dir', 'domain', '--agent', 'x', '--namespaces', 'app', '--out', 'other']);
    assertOneLineError(result, /^synpass keys issue-agent: domain\/other\.example\.jwks\.json: trust bundle does not exist \(--domain-dir must be the directory `synpass keys init-domain --domain other\.example` wrote\)$/);
  });

  it('init-domain and issue-agent refuse to replace keys without --force', () => {
    const caKey = join(directory, 'domain', 'ca.key.pem');
    const credential = join(directory, 'agent', 'credential.jwt');
    const before = { ca: readFileSync(caKey), credential: readFileSync(credential) };
    assertOneLineError(inDirectory(['keys', 'init-domain', '--domain', DOMAIN, '--out', 'domain']), /^synpass keys init-domain: domain\/ca\.key\.pem: already exists; .* \(--force replaces it\)$/);
    assertOneLineError(
      inDirectory(['keys', 'issue-agent', '--domain', DOMAIN, '--domain-dir', 'domain', '--agent', 'web-1', '--namespaces', 'app', '--out', 'agent']),
      /^synpass keys issue-agent: agent\/sign\.key\.pem: already exists; .* \(--force replaces it\)$/,
    );
    assert.deepEqual({ ca: readFileSync(caKey), credential: readFileSync(credential) }, before, 'nothing was replaced');

    const scratch = scratchDirectory('cli-force');
    const again = (args: string[]) => runSynpass(args, { cwd: scratch });
    assert.equal(again(['keys', 'init-domain', '--domain', DOMAIN, '--out', 'd']).code, 0);
    const first = readFileSync(join(scratch, 'd', 'ca.key.pem'));
    assert.equal(again(['keys', 'init-domain', '--domain', DOMAIN, '--out', 'd', '--force']).code, 0);
    assert.notDeepEqual(readFileSync(join(scratch, 'd', 'ca.key.pem')), first, '--force replaced the CA key');
  });

  it('init-domain makes an Ed25519 CA key unless --ca-key p256 asks otherwise, and refuses another type', () => {
    const scratch = scratchDirectory('cli-ca-key');
    const algorithms = (out: string) => (JSON.parse(readFileSync(join(scratch, out, `${DOMAIN}.jwks.json`), 'utf8')) as { keys: { alg: string }[] }).keys.map((key) => key.alg);
    assert.equal(inDirectory(['keys', 'init-domain', '--domain', DOMAIN, '--out', join(scratch, 'default')]).code, 0);
    assert.deepEqual(algorithms('default'), ['EdDSA']);
    const p256 = inDirectory(['keys', 'init-domain', '--domain', DOMAIN, '--out', join(scratch, 'p256'), '--ca-key', 'p256']);
    assert.equal(p256.code, 0, p256.stderr);
    assert.match(p256.stdout, / p256 CA key /);
    assert.deepEqual(algorithms('p256'), ['ES256']);
    const refused = inDirectory(['keys', 'init-domain', '--domain', DOMAIN, '--out', join(scratch, 'rsa'), '--ca-key', 'rsa']);
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /--ca-key.*'rsa' is invalid/);
  });

  it('issue-agent --for-config lists exactly the namespaces the configuration asserts', () => {
    const config = write('for-config.yaml', agentConfig());
    const issued = inDirectory(['keys', 'issue-agent', '--domain', DOMAIN, '--domain-dir', 'domain', '--agent', 'derived', '--for-config', config, '--out', 'derived']);
    assert.equal(issued.code, 0, issued.stderr);
    assert.match(issued.stdout, /\(namespaces: app, env, host, process, team\)$/m);
    const inspected = inDirectory(['keys', 'inspect', 'derived/credential.jwt', '--bundles', 'bundles']);
    assert.equal(inspected.code, 0, inspected.stderr);
    assert.deepEqual((JSON.parse(inspected.stdout) as { namespaces: string[] }).namespaces, ['app', 'env', 'host', 'process', 'team']);

    const usage = /^synpass keys issue-agent: give either --for-config <agent config> or --namespaces <list>$/;
    assertOneLineError(inDirectory(['keys', 'issue-agent', '--domain', DOMAIN, '--domain-dir', 'domain', '--agent', 'n', '--out', 'n']), usage);
    assertOneLineError(inDirectory(['keys', 'issue-agent', '--domain', DOMAIN, '--domain-dir', 'domain', '--agent', 'n', '--out', 'n', '--namespaces', 'app', '--for-config', config]), usage);
  });

  it('keys inspect exits 1 when the bundles do not verify the credential, 2 when the file is missing', () => {
    const foreign = scratchDirectory('cli-foreign');
    assert.equal(runSynpass(['keys', 'init-domain', '--domain', 'other.example', '--out', foreign]).code, 0);
    const result = inDirectory(['keys', 'inspect', 'agent/credential.jwt', '--bundles', foreign]);
    assert.equal(result.code, 1, result.stderr);
    assert.equal((JSON.parse(result.stdout) as { verified: boolean }).verified, false);
    assertOneLineError(inDirectory(['keys', 'inspect', 'missing.jwt']), /^synpass keys inspect: missing\.jwt: credential does not exist$/);
  });

  describe('policy explain', () => {
    const web = 'synpass.subject=spiffe://demo.synpass/web,app.name=web,app.tier=frontend,synpass.trust-domain=demo.synpass';
    const api = 'synpass.subject=spiffe://demo.synpass/api,app.name=api,synpass.trust-domain=demo.synpass';
    const explain = (from: string, to: string, port: string) => runSynpass(['policy', 'explain', EXAMPLES, '--from', from, '--to', to, '--port', port]);

    it('exits 0 on ALLOW', () => {
      const result = explain(web, api, '8080');
      assert.equal(result.code, 0, result.stdout);
      assert.match(result.stdout, /^ALLOW /);
      assert.doesNotMatch(result.stdout, /note:/);
    });

    it('exits 1 on DENY, and points out a side without synpass.subject', () => {
      const result = explain(web, 'app.name=api', '8080');
      assert.equal(result.code, 1);
      assert.match(result.stdout, /^DENY /);
      assert.match(result.stdout, /^note: --to has no synpass\.subject, so it was judged as a peer without identity/m);
      assert.doesNotMatch(result.stdout, /note: --from/);
    });

    it('a DENY between two identities has no note', () => {
      const result = explain(web, api, '9999');
      assert.equal(result.code, 1);
      assert.doesNotMatch(result.stdout, /note:/);
    });

    it('exits 2 on bad input', () => {
      assert.equal(explain(web, api, 'http').code, 2);
      assert.equal(explain('nonsense', api, '8080').code, 2);
    });
  });
});
