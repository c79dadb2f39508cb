// What a stopping agent keeps of its kernel's tables, so that after a restart each client's next
// fast SYN is accepted again instead of going unanswered for a retransmission timeout (the server
// table), and its own workloads go on sending fast SYNs instead of taking a first contact again
// (the client table). It holds no fast key: an entry names its peer's credential, kept whole and
// verified again at restore, and the client token's signature, from which the fast key is derived
// again with this agent's key-agreement key (the same one, or nothing is restored). The one key
// it holds is this agent's previous key-agreement key, while entries rest on it (after a
// rotation): the agent's current one is in its key file anyway, and that one is as private.
// Pure: encoding and validation only.
import { z } from 'zod';
import { SynpassError } from '../errors.ts';
import type { KeptTables, SocketOwner } from '../handshake/kernel-path.ts';
import type { VerifiedIdentity } from '../token/identity-token.ts';
import { MAP_CAPACITY } from './layouts.ts';

export class SavedTablesError extends SynpassError<'malformed'> {
  override readonly name = 'SavedTablesError';
}

const FORMAT = 1;
const base64url = (max: number) => z.string().max(max).regex(/^[A-Za-z0-9_-]*$/);
const text = z.record(z.string().max(256), z.string().max(4096));
const identity = z.object({ trustDomain: z.string(), subject: z.string(), attributes: text, provenance: text, agent: z.string(), expiresAt: z.number() });
const port = z.number().int().min(1).max(65_535);
const credentialIndex = z.number().int().min(0);

// Files of runs before 2026-12-05 name no local address: such entries are not restored.
const serverEntries = z
  .array(z.object({ peerAddress: z.string().max(64), localAddress: z.string().max(64).optional(), port, credential: credentialIndex, tokenSignature: base64url(256), peer: identity, expiresAt: z.number() }))
  .max(MAP_CAPACITY.fast_servers);

const savedSchema = z
  .object({
    format: z.literal(FORMAT),
    ownKeyAgreementKey: base64url(64),
    credentials: z.array(z.string().max(16_384)).max(MAP_CAPACITY.fast_servers + MAP_CAPACITY.fast_clients),
    entries: serverEntries,
    // Files of runs before 2026-12-06 keep no previous key.
    retiring: z.object({ privateKey: base64url(256), untilSeconds: z.number(), entries: serverEntries }).optional(),
    // A file of a run that kept only the server table has none.
    clients: z
      .array(
        z.object({
          serverAddress: z.string().max(64),
          port,
          owner: z.object({ uid: z.number().int().min(-1).max(0xffffffff), workload: z.number().int().min(0).max(0xffffffff) }),
          credential: credentialIndex,
          tokenSignature: base64url(256),
          peer: identity,
          local: text,
          expiresAt: z.number(),
        }),
      )
      .max(MAP_CAPACITY.fast_clients)
      .default([]),
  })
  .refine((saved) => [...saved.entries, ...saved.clients, ...(saved.retiring?.entries ?? [])].every((entry) => entry.credential < saved.credentials.length), { message: 'an entry names a credential the file does not hold' });

/** One entry of the kernel's server table, as the handshake admitted it. */
export interface ServerToSave {
  peerAddress: string;
  /** This host's address or a pod's: the entry's local workload. */
  localAddress: string;
  port: number;
  /** The peer's credential, compact JWS. */
  credential: string;
  tokenSignature: Uint8Array;
  peer: VerifiedIdentity;
  expiresAt: number;
}

/** One entry of the kernel's client table, as the handshake learned it. */
export interface ClientToSave {
  serverAddress: string;
  port: number;
  owner: SocketOwner;
  /** The server's credential, compact JWS. */
  credential: string;
  /** Our token's, which the server's entry rests on. */
  tokenSignature: Uint8Array;
  peer: VerifiedIdentity;
  local: Readonly<Record<string, string>>;
  expiresAt: number;
}

/** This agent's key-agreement key before its last rotation, while honoured, and the server entries resting on it. */
export interface RetiringToSave {
  /** PKCS#8 DER. */
  privateKey: Uint8Array;
  untilSeconds: number;
  servers: Iterable<ServerToSave>;
}

/** The file's text; each credential is written once, however many entries rest on it. */
export function encodeSavedTables(ownKeyAgreementKey: Uint8Array, servers: Iterable<ServerToSave>, clients: Iterable<ClientToSave>, retiring: RetiringToSave | null = null): string {
  const credentials: string[] = [];
  const indexOf = new Map<string, number>();
  const index = (credential: string): number => {
    let found = indexOf.get(credential);
    if (found === undefined) {
      found = credentials.push(credential) - 1;
      indexOf.set(credential, found);
    }
    return found;
  };
  const base64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64url');
  const serverEntries = (entries: Iterable<ServerToSave>) =>
    [...entries].map(({ peerAddress, localAddress, port, credential, tokenSignature, peer, expiresAt }) => ({ peerAddress, localAddress, port, credential: index(credential), tokenSignature: base64(tokenSignature), peer, expiresAt }));
  const saved: z.infer<typeof savedSchema> = {
    format: FORMAT,
    ownKeyAgreementKey: base64(ownKeyAgreementKey),
    credentials,
    entries: serverEntries(servers),
    clients: [...clients].map(({ serverAddress, port, owner, credential, tokenSignature, peer, local, expiresAt }) => ({ serverAddress, port, owner, credential: index(credential), tokenSignature: base64(tokenSignature), peer, local, expiresAt })),
    ...(retiring === null ? {} : { retiring: { privateKey: base64(retiring.privateKey), untilSeconds: retiring.untilSeconds, entries: serverEntries(retiring.servers) } }),
  };
  return JSON.stringify(saved);
}

/** The file read back; anything else than what encodeSavedTables writes is refused whole. */
export function decodeSavedTables(source: string, file: string): KeptTables {
  let json: unknown;
  try {
    json = JSON.parse(source);
  } catch (cause) {
    throw new SavedTablesError('malformed', `${file}: not JSON`, { file }, { cause });
  }
  const result = savedSchema.safeParse(json);
  if (!result.success) throw new SavedTablesError('malformed', `${file}: ${result.error.issues[0]?.message ?? 'invalid'}`, { file });
  return result.data;
}
