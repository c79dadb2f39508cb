import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createPublicKey, diffieHellman, sign, verify } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { generateKeyPair, type KeyPairKind } from '../../../agent/src/identity/key-generation.ts';

const MODULE_PATH = fileURLToPath(new URL('../../../agent/src/identity/key-generation.ts', import.meta.url));

describe('key generation', () => {
  const expected: Record<KeyPairKind, { type: string; curve?: string }> = {
    p256: { type: 'ec', curve: 'prime256v1' },
    ed25519: { type: 'ed25519' },
    x25519: { type: 'x25519' },
    rsa2048: { type: 'rsa' },
  };
  for (const [kind, { type, curve }] of Object.entries(expected) as [KeyPairKind, { type: string; curve?: string }][]) {
    it(`makes a ${kind} pair whose halves belong together`, () => {
      const pair = generateKeyPair(kind);
      assert.equal(pair.privateKey.type, 'private');
      assert.equal(pair.publicKey.type, 'public');
      assert.equal(pair.privateKey.asymmetricKeyType, type);
      if (curve !== undefined) assert.equal(pair.privateKey.asymmetricKeyDetails?.namedCurve, curve);
      assert.ok(createPublicKey(pair.privateKey).equals(pair.publicKey));
      assert.ok(!pair.publicKey.equals(generateKeyPair(kind).publicKey), 'two pairs differ');
    });
  }

  it('signs with one half and verifies with the other', () => {
    for (const kind of ['p256', 'ed25519', 'rsa2048'] as const) {
      const pair = generateKeyPair(kind);
      const digest = kind === 'ed25519' ? null : 'sha256';
      const signature = sign(digest, Buffer.from('synpass'), pair.privateKey);
      assert.ok(verify(digest, Buffer.from('synpass'), pair.publicKey, signature), kind);
      assert.ok(!verify(digest, Buffer.from('synpasS'), pair.publicKey, signature), kind);
    }
  });

  it('agrees on one secret from both sides (x25519)', () => {
    const a = generateKeyPair('x25519');
    const b = generateKeyPair('x25519');
    assert.deepEqual(diffieHellman({ privateKey: a.privateKey, publicKey: b.publicKey }), diffieHellman({ privateKey: b.privateKey, publicKey: a.publicKey }));
  });

  // Node 20 deadlocked here when keys came straight from generateKeyPairSync: a key exported as
  // JWK while the collector finalised its generation job (see key-generation.ts). A tiny young
  // generation makes that collection frequent; before the fix a run hung within 30,000 keys.
  it('exports freshly generated keys under constant garbage collection without hanging', async () => {
    const script = `
      const { createPublicKey } = await import('node:crypto');
      const { generateKeyPair } = await import(${JSON.stringify(MODULE_PATH)});
      let exported = 0;
      for (let i = 0; i < 30000; i++) {
        const { privateKey } = generateKeyPair(i % 2 === 0 ? 'ed25519' : 'p256');
        exported += Object.keys(createPublicKey(privateKey).export({ format: 'jwk' })).length > 0 ? 1 : 0;
      }
      process.stdout.write(String(exported));`;
    const outcome = await new Promise<{ code: number | null; signal: string | null; stdout: string }>((resolve) => {
      const child = execFile(process.execPath, ['--max-semi-space-size=1', '--import', 'tsx', '--input-type=module', '-e', script], { timeout: 60_000, killSignal: 'SIGKILL' }, (_error, stdout) => {
        resolve({ code: child.exitCode, signal: child.signalCode, stdout });
      });
    });
    assert.deepEqual(outcome, { code: 0, signal: null, stdout: '30000' }, 'the child finished all 30,000 keys within 60 s');
  });
});
