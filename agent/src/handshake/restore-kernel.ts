// After a restart, the server table the previous run kept (KeptServers) goes back
// into the kernel, each entry checked as a first contact would check it now: the credential
// against today's bundles, expiry and deny list, the identity against today's policy. The fast
// key is derived again from the pair key, so only an agent with the same key-agreement key can
// restore anything: the clients hold keys derived from it.
import { deriveFastKey } from '../protocol/fast-keys.ts';
import type { VerifiedCredential } from '../token/credential.ts';
import type { HandshakeContext } from './context.ts';
import type { KeptServers } from './kernel-path.ts';
import { Refusal } from './reasons.ts';

export interface RestoreOutcome {
  restored: number;
  /** Entries left out, by why: a credential refusal's reason, `keys-changed`, `expired`, `not-allowed`, `agent-mismatch`, `refused-by-kernel`. */
  skipped: Record<string, number>;
}

export function restoreKernelServers(ctx: HandshakeContext, saved: KeptServers): RestoreOutcome {
  const outcome: RestoreOutcome = { restored: 0, skipped: {} };
  const skip = (why: string, count = 1) => {
    outcome.skipped[why] = (outcome.skipped[why] ?? 0) + count;
  };
  const kernelPath = ctx.kernelPath;
  if (kernelPath === null) return outcome;
  if (!Buffer.from(saved.ownKeyAgreementKey, 'base64url').equals(ctx.local.kexRaw)) {
    skip('keys-changed', saved.entries.length);
    return outcome;
  }
  const credentials: (VerifiedCredential | Refusal)[] = saved.credentials.map((compact) => ctx.verifier.verifyCredentialText(compact));
  const nowSeconds = ctx.now() / 1000;
  for (const entry of saved.entries) {
    const credential = credentials[entry.credential]!;
    if (credential instanceof Refusal) {
      skip(credential.reason);
      continue;
    }
    // The identity was read from a token that credential's key signed.
    if (entry.peer.agent !== credential.subject || entry.peer.trustDomain !== credential.trustDomain) {
      skip('agent-mismatch');
      continue;
    }
    const expiresAt = Math.min(entry.expiresAt, entry.peer.expiresAt, credential.expiresAt);
    if (expiresAt <= nowSeconds) {
      skip('expired');
      continue;
    }
    const local = ctx.local.tokenForPort(entry.port).localAttributes;
    const auth = ctx.authorizer.ingress({ local, peer: entry.peer, peerAddress: entry.peerAddress, port: entry.port });
    if (!auth.allowed || auth.wouldDrop !== null) {
      skip('not-allowed');
      continue;
    }
    const tokenSignature = Buffer.from(entry.tokenSignature, 'base64url');
    const admitted = kernelPath.admitClient({
      peerAddress: entry.peerAddress,
      port: entry.port,
      fast: deriveFastKey(ctx.verifier.pairKey(credential), tokenSignature),
      peer: entry.peer,
      local,
      expiresAt,
      credential,
      tokenSignature,
    });
    if (admitted) outcome.restored++;
    else skip('refused-by-kernel');
  }
  return outcome;
}
