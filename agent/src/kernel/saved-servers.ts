// What a stopping agent keeps of its kernel's server table, so that after a restart each client's
// next fast SYN is accepted again instead of going unanswered for a retransmission timeout. It
// holds no key: an entry names its peer's credential, kept whole and verified again at restore,
// and the client token's signature, from which the fast key is derived again with this agent's
// key-agreement key (the same one, or nothing is restored). Pure: encoding and validation only.
import { z } from 'zod';
import { SynpassError } from '../errors.ts';
import type { KeptServers } from '../handshake/kernel-path.ts';
import type { VerifiedIdentity } from '../token/identity-token.ts';
import { MAP_CAPACITY } from './layouts.ts';

export class SavedServersError extends SynpassError<'malformed'> {
  override readonly name = 'SavedServersError';
}

const FORMAT = 1;
const base64url = (max: number) => z.string().max(max).regex(/^[A-Za-z0-9_-]*$/);
const text = z.record(z.string().max(256), z.string().max(4096));

const savedSchema = z
  .object({
    format: z.literal(FORMAT),
    ownKeyAgreementKey: base64url(64),
    credentials: z.array(z.string().max(16_384)).max(MAP_CAPACITY.fast_servers),
    entries: z
      .array(
        z.object({
          peerAddress: z.string().max(64),
          port: z.number().int().min(1).max(65_535),
          credential: z.number().int().min(0),
          tokenSignature: base64url(256),
          peer: z.object({ trustDomain: z.string(), subject: z.string(), attributes: text, provenance: text, agent: z.string(), expiresAt: z.number() }),
          expiresAt: z.number(),
        }),
      )
      .max(MAP_CAPACITY.fast_servers),
  })
  .refine((saved) => saved.entries.every((entry) => entry.credential < saved.credentials.length), { message: 'an entry names a credential the file does not hold' });

/** One entry of the kernel's server table, as the handshake admitted it. */
export interface ServerToSave {
  peerAddress: string;
  port: number;
  /** The peer's credential, compact JWS. */
  credential: string;
  tokenSignature: Uint8Array;
  peer: VerifiedIdentity;
  expiresAt: number;
}

/** The file's text; each credential is written once, however many entries rest on it. */
export function encodeSavedServers(ownKeyAgreementKey: Uint8Array, entries: Iterable<ServerToSave>): string {
  const credentials: string[] = [];
  const indexOf = new Map<string, number>();
  const saved: z.infer<typeof savedSchema> = { format: FORMAT, ownKeyAgreementKey: Buffer.from(ownKeyAgreementKey).toString('base64url'), credentials, entries: [] };
  for (const entry of entries) {
    let index = indexOf.get(entry.credential);
    if (index === undefined) {
      index = credentials.push(entry.credential) - 1;
      indexOf.set(entry.credential, index);
    }
    saved.entries.push({
      peerAddress: entry.peerAddress,
      port: entry.port,
      credential: index,
      tokenSignature: Buffer.from(entry.tokenSignature).toString('base64url'),
      peer: entry.peer,
      expiresAt: entry.expiresAt,
    });
  }
  return JSON.stringify(saved);
}

/** The file read back; anything else than what encodeSavedServers writes is refused whole. */
export function decodeSavedServers(source: string, file: string): KeptServers {
  let json: unknown;
  try {
    json = JSON.parse(source);
  } catch (cause) {
    throw new SavedServersError('malformed', `${file}: not JSON`, { file }, { cause });
  }
  const result = savedSchema.safeParse(json);
  if (!result.success) throw new SavedServersError('malformed', `${file}: ${result.error.issues[0]?.message ?? 'invalid'}`, { file });
  return result.data;
}
