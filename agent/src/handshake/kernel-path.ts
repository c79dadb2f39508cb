// The kernel fast path as the handshake sees it. A first contact that proves a client workload
// to a server lets the server's kernel judge that workload's next SYNs to the port, and the
// client's kernel send them with the fast option instead of a token; the handshake only tells
// the kernel path who proved what (agent/src/kernel implements it).
import type { FastKey } from '../protocol/fast-keys.ts';
import type { VerifiedCredential } from '../token/credential.ts';
import type { VerifiedIdentity } from '../token/identity-token.ts';
import type { Authorizer } from './authorizer.ts';

/** The attributes of this end's workload at a local address and port, as they are now. */
export type LocalWorkloadAt = (address: string, port: number) => Readonly<Record<string, string>>;

interface KernelEntry {
  fast: FastKey;
  /** The peer workload, and this end's attributes, as policy judged them. */
  peer: VerifiedIdentity;
  local: Readonly<Record<string, string>>;
  /** Unix seconds: the earliest expiry of the tokens and credentials the key rests on. */
  expiresAt: number;
}

/**
 * Server side: a client workload at `peerAddress` proven and admitted to `port` of
 * `localAddress` (this host's, or one of its pods').
 */
export interface AdmittedClient extends KernelEntry {
  peerAddress: string;
  localAddress: string;
  port: number;
  /** What the fast key was derived from besides this agent's key: kept so a restart can derive it again. */
  credential: VerifiedCredential;
  tokenSignature: Uint8Array;
}

/**
 * Who opened a local connection, as the kernel names it: on a node, `pod`, the pod whose address
 * it connects from; else `workload`, the number (from 1, in `workloads` order) of the configured
 * workload whose cgroup it runs in (0: none); else `uid`, the socket's owner.
 */
export interface SocketOwner {
  uid: number;
  workload: number;
  /** The pod's address. */
  pod?: string | undefined;
}

/** Client side: the server at (`serverAddress`, `port`) holds our workload `owner` in its kernel. */
export interface FastServer extends KernelEntry {
  serverAddress: string;
  port: number;
  owner: SocketOwner;
  /** What the fast key was derived from besides this agent's key: the server's credential and our token's signature. */
  credential: VerifiedCredential;
  tokenSignature: Uint8Array;
}

/**
 * On a node: two of its pods, judged between them at a connection from `clientAddress` to `port`
 * of `serverAddress` (the server pod's ingress, the client pod's egress). The node's kernel lets
 * the client pod's later SYNs to that port by where they enter the node.
 */
export interface PodPair {
  clientAddress: string;
  serverAddress: string;
  port: number;
  client: VerifiedIdentity;
  server: VerifiedIdentity;
  /** Each pod's token signature then: the pair holds while both pods keep those tokens. */
  clientTokenSignature: Uint8Array;
  serverTokenSignature: Uint8Array;
  /** Unix seconds: the earlier end of the two pods' tokens. */
  expiresAt: number;
}

/**
 * On a node: one of its pods reached a pod of the node, or another host in the target networks,
 * through a service address and port (the DNAT chose it). The node's kernel leaves the client
 * pod's later SYNs there to the rules after the DNAT, where a pair of pods the agent judged lets
 * one by (PodPair) and the queue judges the rest. It admits nothing itself, so policy edits leave
 * it alone.
 */
export interface ServiceRoute {
  clientAddress: string;
  serviceAddress: string;
  port: number;
  /** The client pod's token signature then: the route holds while the pod keeps that token. */
  clientTokenSignature: Uint8Array;
  /** Unix seconds: the end of the client pod's token. */
  expiresAt: number;
}

/**
 * The kernel tables a stopped run kept for the next (kernel/saved-tables.ts writes and reads
 * them). No fast key: an entry names its peer's credential (by index) and the client token's
 * signature, and the fast key is derived again from them.
 */
export interface KeptTables {
  /** This agent's X25519 public key then, base64url: the entries hold only under the same key. */
  ownKeyAgreementKey: string;
  /** Compact credentials, each once. */
  credentials: readonly string[];
  /** The server table: client workloads admitted to local ports. */
  entries: readonly KeptServerEntry[];
  /** The client table: servers that hold a local workload. */
  clients: readonly KeptClientEntry[];
  /** The key before the last rotation, while it is honoured, and the server entries resting on it. */
  retiring?: KeptRetiring | undefined;
}

/**
 * This agent's previous key-agreement key and what peers proved under it: after a restart its
 * SYN proofs are still honoured, and its entries are still accepted and tell their clients to
 * learn the new key (Retiring in docs/protocol.md), until `untilSeconds`.
 */
export interface KeptRetiring {
  /** The X25519 private key, PKCS#8 DER, base64url: it never leaves this host's file. */
  privateKey: string;
  /** Unix seconds: the end of the credential that key belonged to. */
  untilSeconds: number;
  entries: readonly KeptServerEntry[];
}

export interface KeptServerEntry {
  peerAddress: string;
  /** Absent in a file of a run before 2026-12-05, whose entries named no local address: not restored. */
  localAddress?: string | undefined;
  port: number;
  /** Index into `credentials`. */
  credential: number;
  /** base64url. */
  tokenSignature: string;
  peer: VerifiedIdentity;
  expiresAt: number;
}

export interface KeptClientEntry {
  serverAddress: string;
  port: number;
  owner: SocketOwner;
  /** Index into `credentials`: the server's. */
  credential: number;
  /** Our token's, base64url. */
  tokenSignature: string;
  /** The server workload, and the local workload's attributes the server was proven. */
  peer: VerifiedIdentity;
  local: Readonly<Record<string, string>>;
  expiresAt: number;
}

export interface KernelPath {
  /**
   * Client side, at a SYN on the queue: the number of the configured workload whose cgroup opened
   * the connection (0: none, or cgroups are not configured), found by the SYN's local address and
   * port and its ISN, which a destination NAT on the way out leaves as the socket knows them.
   * Each answer is given once.
   */
  takeConnectionWorkload(localAddress: string, localPort: number, isn: number): number;
  /** Whether the kernel took the entry (a full table refuses it; the next connection is queued). */
  admitClient(entry: AdmittedClient): boolean;
  /**
   * Server side, at the SYN-ACK of a handshake the kernel could take: whether the listener of
   * local `port` signs answers to fast SYNs (its SYN-ACK carries the ready option). One that does
   * not listens outside the programs' cgroup, or began listening before they were attached and was
   * not swept (no CAP_PERFMON, an older kernel), and keeps its pairs on the queue until it listens
   * again.
   */
  listenerAnswered(port: number, ready: boolean): void;
  /** Whether the kernel took the entry (a full table refuses it; the next connection is queued). */
  useServer(entry: FastServer): boolean;
  /** On a node: whether the kernel took the pair (a full table, or a host that is no node, refuses it; the next connection is queued). */
  admitPodPair(pair: PodPair): boolean;
  /** On a node, where the rules judge pods' SYNs after the DNAT: whether the kernel took the route (a full table refuses it; the next connection takes the queue at the SYN, before the DNAT, as before). */
  deferServiceRoute(route: ServiceRoute): boolean;
  /**
   * Policy or a local workload changed: each entry is judged again (a large table in slices, the
   * event loop free between them), a server entry for the workload `localAt` names at its address
   * now; a client no longer admitted is dropped in the kernel from its next SYN, and a pair of
   * pods no longer admitted goes (its next SYN takes the queue).
   */
  reauthorize(authorizer: Authorizer, localAt: LocalWorkloadAt): void;
  /** Which local ports admit no peer without identity from anywhere: the kernel drops such SYNs itself. */
  cloak(closed: (port: number) => boolean): void;
  /** This agent's workloads may have changed: its kernel stops sending fast SYNs, and letting pairs of its pods by, until each proves itself again. */
  forgetOwnWorkloads(): void;
  /**
   * The node's pods' tokens were issued again (a pod added, changed or gone): a pod whose token at
   * its address is not the one its entries rest on (`tokenSignatureAt`: none, the pod is gone)
   * stops sending fast SYNs under them, and its pairs with other pods and its service routes go.
   */
  podTokensChanged(tokenSignatureAt: (address: string) => Uint8Array | undefined): void;
  /**
   * A local pod's fast SYN reached the queue, where the node's kernel should have vouched for it
   * as it entered the node (its link has no tc program): the pod's entries go, and it gets no new
   * ones until the tc program is on another interface.
   */
  podUnvouched(address: string): void;
  /**
   * This agent's keys changed. What peers proved under the previous ones stays valid until
   * `untilSeconds` (the previous credential's expiry), as the user-space exchange honours the
   * previous key; meanwhile the kernel tells each such client, in its next fast SYN-ACK, to learn
   * this agent anew at the following connect. This agent's own workloads stop sending fast SYNs.
   * The agent's tables change at once; a full kernel table learns it in slices.
   */
  retire(untilSeconds: number): void;
  /**
   * The caches were flushed or the deny list changed: the kernel holds nothing (a full table once
   * its slices are done), every pair starts with first contact.
   */
  forgetAll(): void;
}
