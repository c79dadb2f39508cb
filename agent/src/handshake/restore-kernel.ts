// After a restart, the kernel tables the previous run kept (KeptTables) go back into the kernel,
// each entry checked as a first contact would check it now: the credential against today's
// bundles, expiry and deny list, the identity against today's policy, and on the client side the
// local workload against what it is today. The fast key is derived again from the pair key, so
// only an agent with the same key-agreement key can restore anything: its peers hold keys derived
// from it. Entries resting on its key before the last rotation come back retiring, with that key,
// which the file keeps until it ends.
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { deriveFastKey, type FastKey } from '../protocol/fast-keys.ts';
import type { VerifiedCredential } from '../token/credential.ts';
import { previousKey, type HandshakeContext, type PreviousKey } from './context.ts';
import type { KeptRetiring, KeptServerEntry, KeptTables } from './kernel-path.ts';
import { Refusal } from './reasons.ts';

export interface RestoreOutcome {
  restored: number;
  /**
   * Entries left out, by why: a credential refusal's reason, `keys-changed`, `expired`,
   * `not-allowed`, `agent-mismatch`, `refused-by-kernel`, on the server side `no-local-address`
   * (a file of a run before 2026-12-05), on the client side `workload-changed` (the local
   * workload is not what the server was proven), and for retiring entries `bad-previous-key`.
   */
  skipped: Record<string, number>;
}

/** What a saved entry rests on, checked again, with its fast key. */
interface Rechecked {
  credential: VerifiedCredential;
  expiresAt: number;
  tokenSignature: Uint8Array;
  fast: FastKey;
}

export interface TablesRestored {
  servers: RestoreOutcome;
  clients: RestoreOutcome;
  /** Server entries resting on this agent's key before its last rotation: back in the kernel as retiring. */
  retiring: RestoreOutcome;
}

/** The previous run's previous key, honoured again until its end; else why not. */
function keptPreviousKey(ctx: HandshakeContext, kept: KeptRetiring): PreviousKey | string {
  if (kept.untilSeconds * 1000 <= ctx.now()) return 'expired';
  let kex: KeyObject;
  try {
    kex = createPrivateKey({ key: Buffer.from(kept.privateKey, 'base64url'), format: 'der', type: 'pkcs8' });
  } catch {
    return 'bad-previous-key';
  }
  if (kex.asymmetricKeyType !== 'x25519') return 'bad-previous-key';
  const kexRaw = Buffer.from(createPublicKey(kex).export({ format: 'jwk' }).x ?? '', 'base64url');
  // Only a run with the same current key kept it; one that already honours another has moved on.
  if (kexRaw.equals(ctx.local.kexRaw) || ctx.previousKey !== null) return 'keys-changed';
  return previousKey({ kex, kexRaw }, kept.untilSeconds * 1000);
}

/**
 * What the previous run kept, back as far as it still holds: its previous key always (the
 * user-space exchange honours SYN proofs made to it again), the kernel's tables when the kernel
 * fast path runs (otherwise none is restored).
 */
export function restoreKernelTables(ctx: HandshakeContext, saved: KeptTables): TablesRestored {
  const servers: RestoreOutcome = { restored: 0, skipped: {} };
  const clients: RestoreOutcome = { restored: 0, skipped: {} };
  const retiring: RestoreOutcome = { restored: 0, skipped: {} };
  const retiringEntries = saved.retiring?.entries ?? [];
  if (!Buffer.from(saved.ownKeyAgreementKey, 'base64url').equals(ctx.local.kexRaw)) {
    if (saved.entries.length > 0) servers.skipped['keys-changed'] = saved.entries.length;
    if (saved.clients.length > 0) clients.skipped['keys-changed'] = saved.clients.length;
    if (retiringEntries.length > 0) retiring.skipped['keys-changed'] = retiringEntries.length;
    return { servers, clients, retiring };
  }
  const kept = saved.retiring === undefined ? null : keptPreviousKey(ctx, saved.retiring);
  if (typeof kept === 'string') {
    if (retiringEntries.length > 0) retiring.skipped[kept] = retiringEntries.length;
  } else if (kept !== null) {
    ctx.previousKey = kept;
  }
  const kernelPath = ctx.kernelPath;
  if (kernelPath === null) return { servers, clients, retiring };
  const credentials: (VerifiedCredential | Refusal)[] = saved.credentials.map((compact) => ctx.verifier.verifyCredentialText(compact));
  const nowSeconds = ctx.now() / 1000;
  /** What the entry rests on, and its fast key derived again (from `pairKey`), if it still holds until `untilSeconds`; else why not. */
  const recheck = (
    entry: KeptServerEntry | KeptTables['clients'][number],
    pairKey: (credential: VerifiedCredential) => Buffer = (credential) => ctx.verifier.pairKey(credential),
    untilSeconds = Infinity,
  ): Rechecked | string => {
    const credential = credentials[entry.credential]!;
    if (credential instanceof Refusal) return credential.reason;
    // The identity was read from a token that credential's key signed.
    if (entry.peer.agent !== credential.subject || entry.peer.trustDomain !== credential.trustDomain) return 'agent-mismatch';
    const expiresAt = Math.min(entry.expiresAt, entry.peer.expiresAt, credential.expiresAt, untilSeconds);
    if (expiresAt <= nowSeconds) return 'expired';
    const tokenSignature = Buffer.from(entry.tokenSignature, 'base64url');
    return { credential, expiresAt, tokenSignature, fast: deriveFastKey(pairKey(credential), tokenSignature) };
  };
  const count = (outcome: RestoreOutcome, result: string | true): void => {
    if (result === true) outcome.restored++;
    else outcome.skipped[result] = (outcome.skipped[result] ?? 0) + 1;
  };
  const restoreServer = (entry: KeptServerEntry, held: Rechecked | string): string | true => {
    if (typeof held === 'string') return held;
    const { localAddress } = entry;
    if (localAddress === undefined) return 'no-local-address';
    const local = ctx.localAt(localAddress, entry.port);
    const auth = ctx.authorizer.ingress({ local, peer: entry.peer, peerAddress: entry.peerAddress, port: entry.port });
    if (!auth.allowed || auth.wouldDrop !== null) return 'not-allowed';
    return kernelPath.admitClient({ ...held, peerAddress: entry.peerAddress, localAddress, port: entry.port, peer: entry.peer, local }) || 'refused-by-kernel';
  };
  // The previous key's entries go in first and are then retired, as a rotation in this run would
  // retire them; the current key's, admitted after, are not.
  if (kept !== null && typeof kept !== 'string') {
    const untilSeconds = kept.untilMs / 1000;
    for (const entry of retiringEntries) count(retiring, restoreServer(entry, recheck(entry, (credential) => kept.pairKeys.get(credential), untilSeconds)));
    if (retiring.restored > 0) kernelPath.retire(untilSeconds);
  }
  for (const entry of saved.entries) count(servers, restoreServer(entry, recheck(entry)));
  for (const entry of saved.clients) {
    const held = recheck(entry);
    if (typeof held === 'string') {
      count(clients, held);
      continue;
    }
    // The server holds the workload our token then named; a fast SYN speaks as that one only if
    // its owner is still that workload here.
    const local = ctx.local.tokenForOwner(entry.owner.uid, entry.owner.workload).localAttributes;
    if (!isDeepStrictEqual({ ...local }, { ...entry.local })) {
      count(clients, 'workload-changed');
      continue;
    }
    const auth = ctx.authorizer.egress({ local, peer: entry.peer, peerAddress: entry.serverAddress, port: entry.port });
    const allowed = auth.allowed && auth.wouldDrop === null;
    count(clients, !allowed ? 'not-allowed' : kernelPath.useServer({ ...held, serverAddress: entry.serverAddress, port: entry.port, owner: entry.owner, peer: entry.peer, local }) || 'refused-by-kernel');
  }
  return { servers, clients, retiring };
}
