// The agent configuration, one entry per field: type and bounds, default, documentation line.
// The environment name of a field is SYNPASS_ + its path in upper snake case. Everything else
// (parser, overrides, unknown-key checks, `--check-config`, docs/operations.md's table) is read
// off this schema; a field is spelled here and nowhere else.
import { z } from 'zod';
import { fieldTypes } from '../config-fields.ts';
import { MAX_MARK_BASE } from '../datapath/marks.ts';
import { ATTESTOR_KINDS } from '../identity/attestors/registry.ts';
import { flowLogSection } from '../telemetry/flow-log.ts';
import { DEFAULT_READINESS_TAINT } from './readiness-taint.ts';

const isSingleBit = (value: number): boolean => (value & (value - 1)) === 0;
/** A cgroup path (under datapath.fastPathCgroup): absolute, no empty, `.` or `..` segment. */
const CGROUP_PATH = /^(\/(?!\.\.?(\/|$))[^/]+)+$/;

export function agentConfigSchema(base: string) {
  const t = fieldTypes(base);
  const workload = t.mapping({
    name: t.text(),
    subject: t.text(),
    uids: z.array(t.integerValue(0, 0xfffffffe), { error: 'a list' }).default([]),
    // As systemd names a unit's cgroup (`systemctl show -p ControlGroup`): under datapath.fastPathCgroup, by default the cgroup v2 mount.
    cgroups: z.array(t.text().regex(CGROUP_PATH, { error: 'a cgroup path like /system.slice/billing.service' }), { error: 'a list' }).default([]),
    ports: t.ports().default([]),
    attributes: t.stringMapValue().default({}),
  });
  const workloads = z
    .preprocess((value) => value ?? undefined, z.array(workload, { error: 'a list' }).default([]))
    .superRefine((list, context) => {
      const seen = new Set<string>();
      list.forEach((entry, i) => {
        if (seen.has(entry.name)) context.addIssue({ code: 'custom', path: [i, 'name'], message: `a name not used by another workload ("${entry.name}" is)` });
        seen.add(entry.name);
      });
    });
  const listOf = <T extends z.ZodType>(item: T) => z.preprocess((value) => value ?? undefined, z.array(item, { error: 'a list' }).default([]));

  return t
    .mapping({
      mode: t.choice(['identity', 'pass-through'], 'identity', 'identity: tokens and policy; pass-through: a fixed test token (datapath checks only)', '"identity" or "pass-through"'),
      identity: t.optionalSection({
        subject: t.string('the SPIFFE ID of the workload this host presents'),
        credential: t.path('the agent credential (JWT), from `synpass keys issue-agent`'),
        signingKey: t.path('the signing key (PEM, mode 600)'),
        keyAgreementKey: t.path('the key-agreement key (PEM, mode 600)'),
        trustBundles: t.path('directory of trust bundles, one `<domain>.jwks.json` per trusted domain'),
        tokenTtlMinutes: t.integer(1, 1440, 10, 'lifetime of the workload tokens the agent signs (renewed before expiry)'),
        denyList: t.optionalPath('deny list: revoked credential ids and agent key thumbprints (YAML), refused from the next handshake on; reloaded when it changes', 'none'),
        issuer: t.section({
          url: t.optionalString('the issuer (`synpass issuer run`): the agent makes its own keys, joins and renews its credential at half-life', { pattern: /^https:\/\//, error: 'an https:// URL' }),
          tlsCa: t.optionalPath("PEM of the CA that signed the issuer's TLS certificate", "the system's CAs"),
          joinToken: t.optionalPath('file holding a join token (`synpass issuer token create`), deleted once spent'),
          kubernetesToken: t.optionalPath('projected service-account token (audience synpass) that attests this node in Kubernetes'),
          cloudDocument: t.optionalPath('instance-identity document that attests this node in a cloud (with cloudSignature)'),
          cloudSignature: t.optionalPath("the provider's signature over cloudDocument (base64)"),
        }),
      }),
      workloads: t.structured(workloads, 'other local workloads with their own identity: `{ name, subject, uids, cgroups, ports, attributes }`'),
      attestors: t.section(Object.fromEntries(ATTESTOR_KINDS.map((kind) => [kind.key, kind.field(t)]))),
      policy: t.optionalSection({
        directory: t.path('policy files (docs/policy.md); without a policy section, admission decides'),
        watch: t.boolean(true, 'reload when the files change (SIGHUP always reloads)'),
      }),
      admission: t.section({
        protectedPorts: t.structured(z.union([z.literal('all'), t.ports()]).default([]), 'ports that admit only identities `allow` names, or "all" (used only without policy)'),
        allow: t.structured(listOf(t.mapping({ subject: t.text().optional(), attributes: t.stringMapValue().default({}), ports: t.ports().optional() })), 'identities admitted: `{ subject (trailing * = prefix), attributes, ports }`'),
        allowWithoutIdentity: t.structured(listOf(t.mapping({ cidr: t.cidr(), ports: t.ports().optional() })), 'networks admitted without identity: `{ cidr, ports }`'),
      }),
      replayWindowSeconds: t.integer(1, 600, 30, 'how far a SYN time may be from now, and how long its nonce is remembered'),
      targets: t.cidrs('networks that receive tokens (only these)'),
      excluded: t.cidrs('networks the agent never touches'),
      handshake: t.section({
        timeoutSeconds: t.integer(1, 600, 30, 'how long a handshake in progress is kept'),
        maxFlows: t.integer(1, 16_777_216, 65_536, 'handshakes in progress tracked at once (past it: `flow-table-full`)'),
        maxNonces: t.integer(1, 16_777_216, 262_144, 'SYN nonces remembered for the replay window (past it: `replay-cache-full`)'),
        signatureChecksPerSource: t.integer(0, 1_000_000, 1000, 'first-contact signature checks a second per source, IPv4 address or IPv6 /64 (past it: `signature-rate-limited`; 0: unlimited)'),
        rehearsals: t.integer(0, 10_000, 1500, 'first contacts rehearsed in memory after start, between two throwaway agents, so that real ones run compiled code (0: none)'),
      }),
      datapath: t.section({
        queue: t.integer(0, 65535, 3170, 'first NFQUEUE number'),
        queueCount: t.integer(1, 64, 1, 'queues to balance flows across'),
        queueMaxLength: t.integer(1, 1_000_000, 4096, 'kernel queue length'),
        queueRatePerSource: t.integer(0, 1_000_000, 10_000, 'incoming packets a second per source, IPv4 address or IPv6 /64, let into the queue, in bursts of at most a quarter of the queue; the kernel drops the rest (`source-rate-limited`; 0: unlimited)'),
        failOpen: t.boolean(false, 'accept packets when the queue is full or no agent listens (default: drop, fail closed)'),
        markBase: t.integer(1, MAX_MARK_BASE, 0x00100000, 'lowest of the 6 packet-mark bits the agent owns', {
          defaultText: '0x100000',
          check: { test: isSingleBit, error: 'a single bit, e.g. 1048576 (0x100000)' },
        }),
        mtu: t.integer(576, 65535, 1500, 'largest packet the agent may produce'),
        onMalformed: t.choice(['drop', 'accept'], 'drop', 'verdict for a queued packet that cannot be parsed'),
        iptables: t.choice(['nft', 'legacy'], 'nft', 'preferred iptables backend; falls back to the other'),
        statusSocket: t.pathWithDefault('/run/synpass/agent.sock', 'unix socket for `synpass status`'),
        batchSlots: t.integer(1, 1024, 32, 'packets received per `recvmmsg`'),
        socketBufferBytes: t.integer(65_536, 1 << 30, 8 * 1024 * 1024, 'netlink receive buffer of each queue socket', { defaultText: '8 MiB' }),
        ruleCheckSeconds: t.integer(1, 3600, 5, 'how often the rules are checked besides at each ruleset change the kernel reports (nftables notifications), and reinstalled when someone removed them (and NAT rules looked for, while the kernel fast path started without them)'),
        kernelFastPath: t.choice(['auto', 'on', 'off'], 'auto', 'known pairs proven and judged in the kernel (eBPF): `auto` when the kernel, bpffs and cgroup v2 allow it, `on` or refuse to start, `off` queue only'),
        fastPathPinDir: t.pathWithDefault('/sys/fs/bpf/synpass', 'bpffs directory of the fast path\'s pinned maps and cgroup link (one per agent)'),
        fastPathStateFile: t.pathOrOff('/var/lib/synpass/kernel-fast-path.json', 'where a stopping agent keeps its kernel\'s server and client tables (no fast keys: each peer\'s credential and token signature; after a key rotation, its previous key-agreement key while that is honoured, which is all it keeps with the kernel fast path off), so that after a restart clients\' next fast SYNs are accepted at once and local workloads go on sending fast SYNs (`off`: each client falls back once, about 1 s; each local workload takes a first contact)'),
        fastPathKeepSeconds: t.integer(0, 3600, 0, 'a stopping agent leaves the kernel fast path attached, judging known pairs and cloaking on its own, for this long, so that a restart within it cuts no known pair; the next start replaces the programs, `synpass agent cleanup` removes them, and past it they judge nothing (0: detached at stop)'),
        fastPathCgroup: t.optionalPath('cgroup v2 directory whose sockets get the fast path', 'the cgroup2 mount (the whole host)'),
        fastPathConntrack: t.choice(['auto', 'skip', 'keep'], 'auto', 'whether connections the kernel fast path judges skip conntrack (a notrack rule by mark): `auto` skips unless this network namespace has NAT rules, at start or, for the connections judged after it, at the rule check that finds them; `keep` where such connections are NATed or another firewall needs their state'),
        fastPathInterfaces: t.strings('interfaces whose ingress the fast path judges (none given: every interface with an address but loopback; on a Kubernetes node every interface but loopback)', 'a list of interface names'),
      }),
      telemetry: t.section({
        metricsAddress: t.optionalString('host:port for /metrics, /healthz and /readyz', { pattern: /^(\[[0-9a-fA-F:]+\]|[^:]+):\d{1,5}$/, error: 'host:port, e.g. 0.0.0.0:9464' }),
        whoisSocket: t.pathOrOff('/run/synpass/whois.sock', 'unix socket of the peer-identity API (`off` turns it off)'),
        credentialMarginSeconds: t.integer(0, 31_536_000, 300, '/readyz fails when the credential expires within this many seconds'),
        flowLog: flowLogSection(t),
      }),
      kubernetes: t.optionalSection({
        nodeName: t.string('this node: its pods become workloads (pod attestor)'),
        apiServer: t.optionalString('API server URL; in-cluster access when omitted', { pattern: /^https?:\/\//, error: 'an http(s):// URL' }),
        readinessTaint: t.stringOrOff(DEFAULT_READINESS_TAINT, 'the taint key the agent removes from its node once it runs (`off`: none); register nodes with it so pods start behind the agent', {
          pattern: /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/,
          error: 'a taint key such as example.com/name, or off',
        }),
      }),
    })
    .superRefine((config, context) => {
      const issuer = config.identity?.issuer;
      if (issuer !== undefined && issuer !== null) {
        const kinds = [issuer.joinToken, issuer.kubernetesToken, issuer.cloudDocument].filter((path) => path !== null);
        if (kinds.length > 1) context.addIssue({ code: 'custom', path: ['identity', 'issuer'], message: 'one of joinToken, kubernetesToken and cloudDocument (the node attests one way)' });
        if ((issuer.cloudDocument === null) !== (issuer.cloudSignature === null)) {
          context.addIssue({ code: 'custom', path: ['identity', 'issuer', 'cloudSignature'], message: 'cloudDocument and cloudSignature come together' });
        }
      }
      const flowLog = config.telemetry.flowLog;
      if (flowLog.sink === 'file' && flowLog.file === null) {
        context.addIssue({ code: 'custom', path: ['telemetry', 'flowLog', 'file'], message: 'a path (sink is "file")' });
      }
    })
    .transform((config) => ({ ...config, identity: config.mode === 'identity' ? config.identity : null, warnings: [] as string[] }));
}

export type AgentConfig = z.output<ReturnType<typeof agentConfigSchema>>;
export type IdentityConfig = NonNullable<AgentConfig['identity']>;
export type WorkloadConfig = AgentConfig['workloads'][number];
export type AttestorConfig = AgentConfig['attestors'];
export type PolicyConfig = NonNullable<AgentConfig['policy']>;
export type HandshakeConfig = AgentConfig['handshake'];
export type DatapathConfig = AgentConfig['datapath'];
export type TelemetryConfig = AgentConfig['telemetry'];
export type { FlowLogConfig } from '../telemetry/flow-log.ts';
export type KubernetesConfig = NonNullable<AgentConfig['kubernetes']>;
