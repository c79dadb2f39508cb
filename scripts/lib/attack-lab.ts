// What the attack-side scripts share (scripts/bench-flood, scripts/fuzz-live, scripts/soak and
// their short runs in test/e2e/attack.test.ts): a lab whose api agent serves metrics, real
// handshake packets captured on the lab's switch, packets moved to the attacker's address, a
// link-layer sender in the outsider, and the agent's memory and counters read from outside.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ParsedPacket, parsePacket } from '../../agent/src/datapath/packet.ts';
import { startIdentityLab, type IdentityLab } from './identity-lab.ts';
import { flushCaches } from '../../agent/src/telemetry/status-client.ts';
import { ROOT, untilRehearsed, type AgentStatus, type Host, type Lab, type NetnsProcess } from './lab.ts';
import { addressBytes, fixChecksums } from './packets.ts';
import { rssMiB } from './proc.ts';

/** The heap limits the agent ships with (Dockerfile, systemd unit): its memory budget. */
export const SHIPPED_NODE_OPTIONS = '--max-old-space-size=128 --max-semi-space-size=8';
export const SERVICE_PORT = 8080;
const METRICS_PORT = 9464;
const INJECTOR = join(ROOT, 'scripts/lib/injector.ts');

export interface AttackLabOptions {
  prefix: string;
  net: number;
  /** Environment of the api agent (its configuration overrides, NODE_OPTIONS). */
  apiEnv?: Record<string, string>;
  /** A policy directory other than the three-tier example. */
  policyDirectory?: string;
  /** How long api's services live (a bound in case the lab is never taken down), seconds. */
  serviceSeconds: number;
  /** The agents' log level: warn (drops only) unless told; benchmarks measure the datapath. */
  logLevel?: 'info' | 'warn';
  /** Agents run the kernel fast path (scripts/lib/lab.ts LabOptions.kernel). */
  kernel?: boolean;
}

/** The port of api's echo service, which the example policy also opens to web. */
export const ECHO_PORT = 7000;

/**
 * web and api agents with the example policy, HTTP and echo services on api, and api's metrics;
 * api runs with the memory budget it ships with.
 */
export async function startAttackLab(options: AttackLabOptions): Promise<IdentityLab> {
  const fixture = await startIdentityLab({
    prefix: options.prefix,
    net: options.net,
    ...(options.policyDirectory === undefined ? {} : { policyDirectory: options.policyDirectory }),
    api: {
      args: ['--metrics-address', `127.0.0.1:${METRICS_PORT}`],
      env: { SYNPASS_LOG_LEVEL: options.logLevel ?? 'warn', NODE_OPTIONS: SHIPPED_NODE_OPTIONS, ...options.apiEnv },
    },
    web: { env: { SYNPASS_LOG_LEVEL: options.logLevel ?? 'warn' } },
    server: { port: SERVICE_PORT, kind: 'http', seconds: options.serviceSeconds },
    ...(options.kernel === undefined ? {} : { kernel: options.kernel }),
  });
  await fixture.lab.peer('api', ['server', String(ECHO_PORT), 'echo', String(options.serviceSeconds)]).waitFor((l) => l.listening === ECHO_PORT);
  await untilRehearsed([fixture.api, fixture.web]);
  return fixture;
}

/**
 * One connection from web to api's service as it crosses the switch, token areas and all: the
 * SYN, SYN-ACK and first ACK, hex. With `firstContact`, the peer caches are flushed before.
 */
export async function captureHandshake(fixture: IdentityLab, family: 4 | 6, firstContact: boolean): Promise<{ syn: Uint8Array; synAck: Uint8Array; ack: Uint8Array }> {
  const { lab } = fixture;
  if (firstContact) {
    await flushCaches(fixture.web.socket);
    await flushCaches(fixture.api.socket);
  } else {
    // A flush before (another capture's) leaves no pair known: one connection makes it known.
    await lab.peerOnce('web', ['http', lab.address('api', family), String(SERVICE_PORT)]);
  }
  const filter = `tcp and host ${lab.address('web', family)} and host ${lab.address('api', family)} and port ${SERVICE_PORT}`;
  const capture = await lab.capture(filter, 3, 10_000);
  await lab.peerOnce('web', ['http', lab.address('api', family), String(SERVICE_PORT)]);
  await capture.waitFor((l) => typeof l.done === 'number', 15_000);
  const packets = capture.lines.filter((l) => typeof l.hex === 'string').map((l) => Uint8Array.from(Buffer.from(String(l.hex), 'hex')));
  if (packets.length < 3) throw new Error(`captured ${packets.length} of the 3 handshake packets`);
  const [syn, synAck, ack] = packets as [Uint8Array, Uint8Array, Uint8Array];
  return { syn, synAck, ack };
}

/** A copy of a well-formed packet between other ends (same family), checksums right. */
export function readdressed(bytes: Uint8Array, source: string, destination: string): Uint8Array {
  const out = Uint8Array.from(bytes);
  const packet = new ParsedPacket();
  if (!parsePacket(out, 0, out.length, packet)) throw new Error(`packet does not parse: ${packet.status}`);
  out.set(addressBytes(source), packet.sourceOffset);
  out.set(addressBytes(destination), packet.sourceOffset + packet.addressLength);
  return fixChecksums(out, packet.ipVersion, packet.tcpOffset);
}

/** Writes packets one hex per line, for the injector. */
export function writePackets(file: string, packets: readonly Uint8Array[]): string {
  writeFileSync(file, `${packets.map((p) => Buffer.from(p).toString('hex')).join('\n')}\n`);
  return file;
}

/**
 * Starts the link-layer sender in the outsider, aimed at api's interface (or from and to other
 * hosts): replay <file> <perSecond|max> <seconds> [count], or fuzz <file> <count> <perSecond|max> <seed>.
 */
export function inject(lab: Lab, mode: 'replay' | 'fuzz', file: string, args: string[], hosts: { from: Host; to: Host } = { from: 'outsider', to: 'api' }): NetnsProcess {
  const targetMac = lab.exec(hosts.to, ['cat', '/sys/class/net/eth0/address']).trim();
  return lab.spawn(hosts.from, [process.execPath, '--import', 'tsx', INJECTOR, mode, 'eth0', targetMac, file, ...args]);
}

/** Verdicts given between two status readings, by "action:reason", both directions summed. */
export function verdictsBetween(before: AgentStatus, after: AgentStatus): Record<string, number> {
  const counts = new Map<string, number>();
  for (const v of after.verdicts) counts.set(`${v.action}:${v.reason}`, (counts.get(`${v.action}:${v.reason}`) ?? 0) + v.count);
  for (const v of before.verdicts) counts.set(`${v.action}:${v.reason}`, (counts.get(`${v.action}:${v.reason}`) ?? 0) - v.count);
  return Object.fromEntries([...counts].filter(([, count]) => count > 0));
}

/** api's Prometheus text, fetched from inside its namespace. */
export async function apiMetrics(lab: Lab): Promise<string> {
  const result = await lab.peerOnce('api', ['fetch', `http://127.0.0.1:${METRICS_PORT}/metrics`]);
  return String(result.body);
}

/** A sample's value from Prometheus text (0 when absent); `labels` as written, or '' for none. */
export function metric(text: string, name: string, labels = ''): number {
  const prefix = labels === '' ? `${name} ` : `${name}{${labels}} `;
  const line = text.split('\n').find((l) => l.startsWith(prefix));
  return line === undefined ? 0 : Number(line.slice(prefix.length));
}

/** Samples a process's RSS every `everyMs` until stopped; the peak and every sample. */
export function rssSampler(pid: number, everyMs: number): { stop(): { peak: number; samples: number[] } } {
  const samples: number[] = [];
  const take = () => {
    try {
      samples.push(rssMiB(pid));
    } catch {
      // the process is gone: its absence is reported by whoever waits on it
    }
  };
  take();
  const timer = setInterval(take, everyMs);
  return {
    stop: () => {
      clearInterval(timer);
      take();
      return { peak: Math.max(...samples), samples };
    },
  };
}
