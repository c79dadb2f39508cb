// Builds the handshake handler a configuration asks for.
import type { HandshakeHandler, TableSize } from '../datapath/handler.ts';
import type { KeptTables, KernelPath } from '../handshake/kernel-path.ts';
import type { TablesRestored } from '../handshake/restore-kernel.ts';
import { encodeSavedTables, type ClientToSave, type ServerToSave } from '../kernel/saved-tables.ts';
import { Admission } from '../handshake/admission.ts';
import { AdmissionAuthorizer, PolicyAuthorizer } from '../handshake/authorizer.ts';
import { PolicyStore } from './policy-store.ts';
import { IdentityHandler } from '../handshake/identity-handler.ts';
import { PassThroughHandler } from '../handshake/pass-through.ts';
import { rehearseFirstContacts, type Rehearsed } from '../handshake/rehearsal.ts';
import { PeerVerifier } from '../handshake/peer-verifier.ts';
import type { Attestor } from '../identity/attestors/attestor.ts';
import { ProcessAttestor } from '../identity/attestors/process.ts';
import { ATTESTOR_KINDS } from '../identity/attestors/registry.ts';
import { StaticAttestor } from '../identity/attestors/static.ts';
import { LocalIdentity } from '../identity/local-identity.ts';
import { CredentialRenewer, pendingEnrollment, type RenewalStatus } from '../issuer/enrollment.ts';
import { podWorkloads, WatchedPods } from '../identity/kubernetes/local-pods.ts';
import { PodWatcher, POD_ATTRIBUTE_NAMESPACE } from '../identity/kubernetes/pod-watcher.ts';
import { KubernetesError, kubernetesAccess } from '../identity/kubernetes/api.ts';
import type { Logger } from '../telemetry/log.ts';
import { readDenyList, watchDenyList } from '../token/deny-list.ts';
import { algorithmOf, decodeJws, type JwsAlgorithm } from '../token/jws.ts';
import type { AgentConfig, AttestorConfig, WorkloadConfig } from './config.ts';
import { inNetworks } from '../cidr.ts';

/** The attestors `attestors:` turns on, in registry order. */
export function buildAttestors(config: AttestorConfig): Attestor[] {
  return ATTESTOR_KINDS.map((kind) => kind.create(config[kind.key])).filter((attestor) => attestor !== null);
}

function buildWorkloadAttestors(workload: WorkloadConfig): Attestor[] {
  return [new StaticAttestor(workload.attributes), new ProcessAttestor(workload.uids, workload.cgroups)];
}

/**
 * Every attribute namespace the configuration's attestors may assert, sorted: what the agent's
 * credential must list (`synpass keys issue-agent --for-config`), or peers refuse the attributes.
 */
export function credentialNamespaces(config: AgentConfig): string[] {
  const attestors = [...buildAttestors(config.attestors), ...config.workloads.flatMap(buildWorkloadAttestors)];
  const namespaces = new Set(attestors.flatMap((attestor) => attestor.namespaces));
  if (config.kubernetes !== null) namespaces.add(POD_ATTRIBUTE_NAMESPACE);
  return [...namespaces].sort();
}

export interface IdentityStatus {
  subject: string;
  /** EdDSA or ES256: the agent's signing key, for rolling out a key type across a fleet. */
  signingAlgorithm: JwsAlgorithm;
  credentialExpiresAt: number;
  tokenExpiresAt: number;
  /** Until when SYN proofs made to the key-agreement key before the last rotation are honoured (null: none is). */
  previousKeyUntil: number | null;
  caches: Record<string, { hits: number; misses: number; size: number }>;
  handshake: Record<string, number>;
  policy: { directory: string; revision: string; reloadsOk: number; reloadsFailed: number } | null;
  /** Renewal from the issuer (null: credentials come as files, renewed by hand). */
  renewal: RenewalStatus | null;
  denyList: { path: string; revision: string; credentials: number; keys: number } | null;
}

export interface BuiltHandler {
  handler: HandshakeHandler;
  stop(): void;
  flushCaches(): void;
  /** Re-reads credential, keys and trust bundles and re-issues tokens (SIGHUP). */
  reload(): Promise<void>;
  /** Null in pass-through mode. */
  status(): IdentityStatus | null;
  /** The handshake's and the verifier's bounded tables (none in pass-through mode). */
  tables(): Record<string, TableSize>;
  /** Hands the kernel fast path to the handshake (pass-through mode has nothing to prove: null). */
  useKernelPath: ((path: KernelPath | null) => void) | null;
  /** The kernel's tables across a restart (kernel/saved-tables.ts); null in pass-through mode. */
  keptKernelTables: KeptKernelTables | null;
  /** Rehearses first contacts with this agent's key algorithm (handshake/rehearsal.ts); null in pass-through mode. */
  rehearse: ((count: number, signal: AbortSignal) => Promise<Rehearsed>) | null;
}

export interface KeptKernelTables {
  /**
   * The file's text, under this agent's current key-agreement key, and with its previous one
   * while that is honoured (`retiring`: the server entries resting on it).
   */
  encode(servers: readonly ServerToSave[], clients: readonly ClientToSave[], retiring: readonly ServerToSave[]): string;
  /** Whether this agent honours a previous key still: the one thing worth keeping without the kernel fast path. */
  holdsPreviousKey(): boolean;
  restore(saved: KeptTables): TablesRestored;
}

/** `--check-config` before the first start of an agent that enrolls: there is no identity to load yet. */
export class EnrollmentPending extends Error {
  override readonly name = 'EnrollmentPending';
}

/** `checkOnly`: load what is there and change nothing (no join token spent, no renewal). */
export async function buildHandler(config: AgentConfig, log: Logger, options: { checkOnly?: boolean } = {}): Promise<BuiltHandler> {
  if (config.mode === 'pass-through' || config.identity === null) {
    return {
      handler: new PassThroughHandler(),
      stop: () => undefined,
      flushCaches: () => undefined,
      reload: () => Promise.resolve(),
      status: () => null,
      tables: () => ({}),
      useKernelPath: null,
      keptKernelTables: null,
      rehearse: null,
    };
  }
  const identityConfig = config.identity;
  const renewer =
    identityConfig.issuer.url === null
      ? null
      : new CredentialRenewer({
          issuerUrl: identityConfig.issuer.url,
          tlsCa: identityConfig.issuer.tlsCa,
          evidence: identityConfig.issuer,
          files: identityConfig,
          log: log.child({ component: 'enrollment' }),
        });
  if (options.checkOnly !== true) await renewer?.ensureCredential();
  else if (renewer !== null) {
    // Before the first start there is nothing to load yet: the check ends at the evidence.
    const pending = pendingEnrollment(renewer);
    if (pending !== null) throw new EnrollmentPending(pending);
  }
  const loadLocal = async (): Promise<LocalIdentity> => {
    const loaded = await LocalIdentity.load({
      files: identityConfig,
      subject: identityConfig.subject,
      attestors: buildAttestors(config.attestors),
      workloads: config.workloads.map((workload) => ({
        name: workload.name,
        subject: workload.subject,
        uids: workload.uids,
        cgroups: workload.cgroups,
        ports: workload.ports,
        attestors: buildWorkloadAttestors(workload),
      })),
      tokenTtlSeconds: identityConfig.tokenTtlMinutes * 60,
      onAttributeDropped: (workload, attribute) => {
        log.warn({ workload, attribute }, 'attribute left out: its namespace is not in the agent credential');
      },
    });
    log.info(
      {
        agent: loaded.credential.subject,
        signingAlgorithm: algorithmOf(loaded.signKey),
        credentialExpiresAt: new Date(loaded.credential.expiresAt * 1000).toISOString(),
        trustedDomains: [...loaded.bundles.keys()],
        workloads: loaded.workloadTokens().map((token) => ({
          name: token.name,
          subject: token.subject,
          attributes: Object.fromEntries([...token.attributes].map(([name, a]) => [name, `${a.value} (${a.attestor})`])),
        })),
      },
      'identity loaded',
    );
    return loaded;
  };
  let local = await loadLocal();
  const verifier = new PeerVerifier(local.bundles, { kex: local.kex, kexRaw: local.kexRaw }, () => Math.floor(Date.now() / 1000));
  const denyListPath = identityConfig.denyList;
  if (denyListPath !== null) verifier.denyList = readDenyList(denyListPath);
  const policy = config.policy === null ? null : PolicyStore.open(config.policy.directory, log);
  if (config.policy?.watch) policy?.watch();
  const authorizer = policy === null ? new AdmissionAuthorizer(new Admission(config.admission)) : new PolicyAuthorizer(() => policy.current);
  let pods: PodWatcher | null = null;
  // Set once the handler exists: the pod list may change before (while it is first read).
  let podsChanged = (): void => undefined;
  let podTokensChanged = (): void => undefined;
  if (config.kubernetes !== null) {
    pods = new PodWatcher({
      access: kubernetesAccess(config.kubernetes.apiServer),
      nodeName: config.kubernetes.nodeName,
      onError: (error) => {
        log.warn({ err: error }, 'kubernetes pod watch failed; retrying');
      },
      onChange: () => {
        local
          .refreshAddresses()
          .then(() => {
            podTokensChanged();
          })
          .catch((error: unknown) => {
            log.error({ err: error }, 'pod tokens could not be issued');
          });
        podsChanged();
      },
    });
    await Promise.race([
      pods.start(),
      new Promise((_, reject) => setTimeout(() => { reject(new KubernetesError('no-pod-list', 'no pod list from the Kubernetes API within 15 s')); }, 15_000).unref()),
    ]);
    const watcher = pods;
    await local.setAddressSource(() => podWorkloads(watcher, local.credential.trustDomain));
    log.info({ node: config.kubernetes.nodeName, pods: pods.podCount }, 'kubernetes pods listed');
  }
  const handler = new IdentityHandler(local, verifier, authorizer, {
    replayWindowSeconds: config.replayWindowSeconds,
    handshakeTimeoutMs: config.handshake.timeoutSeconds * 1000,
    maxFlows: config.handshake.maxFlows,
    maxNonces: config.handshake.maxNonces,
    signatureChecksPerSource: config.handshake.signatureChecksPerSource,
    ...(pods === null ? {} : { localPods: new WatchedPods(pods, local.credential.trustDomain, local.credential.subject), isTarget: inNetworks(config.targets) }),
  });
  const startRenewal = (identity: LocalIdentity): void => {
    identity.startRenewal(
      (error) => {
        log.error({ err: error }, 'token renewal failed; the current token stays until it expires');
      },
      () => {
        log.info({ expiresAt: new Date(identity.tokenExpiresAt * 1000).toISOString() }, 'token renewed');
      },
    );
  };
  podsChanged = () => {
    handler.localPodsChanged();
  };
  podTokensChanged = () => {
    handler.localPodTokensChanged();
  };
  startRenewal(local);
  if (policy !== null) policy.onSwap = () => { handler.policyChanged(); };
  const stopDenyListWatch =
    denyListPath === null || options.checkOnly === true
      ? () => undefined
      : watchDenyList(
          denyListPath,
          (list) => {
            if (list.revision === verifier.denyList.revision) return;
            verifier.denyList = list;
            // Proven pairs (the kernel's too) take a full handshake again, where the list applies.
            handler.forgetServers();
            log.info({ revision: list.revision, credentials: list.credentials.size, keys: list.keys.size }, 'deny list reloaded');
          },
          (error) => { log.error({ err: error }, 'deny list refused; the previous one stays in force'); },
        );
  const reloadIdentity = async (): Promise<void> => {
    // A broken new identity throws here and the running one stays in force.
    const next = await loadLocal();
    const watcher = pods;
    if (watcher !== null) await next.setAddressSource(() => podWorkloads(watcher, next.credential.trustDomain));
    local.stopRenewal();
    local = next;
    verifier.reconfigure(local.bundles, { kex: local.kex, kexRaw: local.kexRaw });
    handler.useIdentity(local);
    startRenewal(local);
  };
  // A renewal swaps the identity only; SIGHUP also re-reads the policy.
  if (options.checkOnly !== true) renewer?.start(async () => {
    await reloadIdentity();
    log.info({ agent: local.credential.subject, credentialExpiresAt: new Date(local.credential.expiresAt * 1000).toISOString() }, 'credential renewed');
  });
  return {
    handler,
    useKernelPath: (path) => { handler.useKernelPath(path); },
    keptKernelTables: {
      encode: (servers, clients, retiring) => {
        const previous = handler.previousKeyToKeep();
        return encodeSavedTables(local.kexRaw, servers, clients, previous === null ? null : { ...previous, servers: retiring });
      },
      holdsPreviousKey: () => handler.previousKeyUntil() !== null,
      restore: (saved) => handler.restoreKernelTables(saved),
    },
    rehearse: (count, signal) =>
      rehearseFirstContacts(count, {
        signingKey: algorithmOf(local.signKey) === 'EdDSA' ? 'ed25519' : 'p256',
        caKey: decodeJws(local.credential.compact).header.alg === 'EdDSA' ? 'ed25519' : 'p256',
        signal,
      }),
    stop: () => {
      stopDenyListWatch();
      renewer?.stop();
      local.stopRenewal();
      policy?.close();
      pods?.stop();
    },
    flushCaches: () => {
      verifier.reconfigure(local.bundles, { kex: local.kex, kexRaw: local.kexRaw });
      handler.forgetServers();
    },
    reload: async () => {
      policy?.reload();
      await reloadIdentity();
    },
    tables: () => ({ ...handler.tables(), ...verifier.tables() }),
    status: () => ({
      subject: identityConfig.subject,
      signingAlgorithm: algorithmOf(local.signKey),
      credentialExpiresAt: local.credential.expiresAt,
      tokenExpiresAt: local.tokenExpiresAt,
      previousKeyUntil: handler.previousKeyUntil(),
      caches: verifier.cacheStats(),
      handshake: handler.stats(),
      policy:
        policy === null
          ? null
          : { directory: policy.directory, revision: policy.current.revision, reloadsOk: policy.reloadsOk, reloadsFailed: policy.reloadsFailed },
      renewal: renewer === null ? null : { ...renewer.status },
      denyList: denyListPath === null ? null : { path: denyListPath, revision: verifier.denyList.revision, credentials: verifier.denyList.credentials.size, keys: verifier.denyList.keys.size },
    }),
  };
}
