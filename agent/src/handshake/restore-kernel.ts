// After a restart, the kernel tables the previous run kept (KeptTables) go back into the kernel,
// each entry checked as a first contact would check it now: the credential against today's
// bundles, expiry and deny list, the identity against today's policy, and on the client side the
// local workload against what it is today. The fast key is derived again from the pair key, so
// only an agent with the same key-agreement key can restore anything: its peers hold keys derived
// from it.
import { isDeepStrictEqual } from 'node:util';
import { deriveFastKey, type FastKey } from '../protocol/fast-keys.ts';
import type { VerifiedCredential } from '../token/credential.ts';
import type { HandshakeContext } from './context.ts';
import type { KeptTables } from './kernel-path.ts';
import { Refusal } from './reasons.ts';

export interface RestoreOutcome {
  restored: number;
  /**
   * Entries left out, by why: a credential refusal's reason, `keys-changed`, `expired`,
   * `not-allowed`, `agent-mismatch`, `refused-by-kernel`, on the server side `no-local-address`
   * (a file of a run before 2026-12-05), and on the client side
   * `workload-changed` (the local workload is not what the server was proven).
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
}

export function restoreKernelTables(ctx: HandshakeContext, saved: KeptTables): TablesRestored {
  const servers: RestoreOutcome = { restored: 0, skipped: {} };
  const clients: RestoreOutcome = { restored: 0, skipped: {} };
  const kernelPath = ctx.kernelPath;
  if (kernelPath === null) return { servers, clients };
  if (!Buffer.from(saved.ownKeyAgreementKey, 'base64url').equals(ctx.local.kexRaw)) {
    if (saved.entries.length > 0) servers.skipped['keys-changed'] = saved.entries.length;
    if (saved.clients.length > 0) clients.skipped['keys-changed'] = saved.clients.length;
    return { servers, clients };
  }
  const credentials: (VerifiedCredential | Refusal)[] = saved.credentials.map((compact) => ctx.verifier.verifyCredentialText(compact));
  const nowSeconds = ctx.now() / 1000;
  /** What the entry rests on, and its fast key derived again, if it still holds; else why not. */
  const recheck = (entry: KeptTables['entries'][number] | KeptTables['clients'][number]): Rechecked | string => {
    const credential = credentials[entry.credential]!;
    if (credential instanceof Refusal) return credential.reason;
    // The identity was read from a token that credential's key signed.
    if (entry.peer.agent !== credential.subject || entry.peer.trustDomain !== credential.trustDomain) return 'agent-mismatch';
    const expiresAt = Math.min(entry.expiresAt, entry.peer.expiresAt, credential.expiresAt);
    if (expiresAt <= nowSeconds) return 'expired';
    const tokenSignature = Buffer.from(entry.tokenSignature, 'base64url');
    return { credential, expiresAt, tokenSignature, fast: deriveFastKey(ctx.verifier.pairKey(credential), tokenSignature) };
  };
  const count = (outcome: RestoreOutcome, result: string | true): void => {
    if (result === true) outcome.restored++;
    else outcome.skipped[result] = (outcome.skipped[result] ?? 0) + 1;
  };
  for (const entry of saved.entries) {
    const held = recheck(entry);
    if (typeof held === 'string') {
      count(servers, held);
      continue;
    }
    const { localAddress } = entry;
    if (localAddress === undefined) {
      count(servers, 'no-local-address');
      continue;
    }
    const local = ctx.localAt(localAddress, entry.port);
    const auth = ctx.authorizer.ingress({ local, peer: entry.peer, peerAddress: entry.peerAddress, port: entry.port });
    const allowed = auth.allowed && auth.wouldDrop === null;
    count(servers, !allowed ? 'not-allowed' : kernelPath.admitClient({ ...held, peerAddress: entry.peerAddress, localAddress, port: entry.port, peer: entry.peer, local }) || 'refused-by-kernel');
  }
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
  return { servers, clients };
}
