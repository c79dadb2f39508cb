// CPU per handshake packet in the agent, without the kernel: the real engine and identity
// handler on a virtual queue (agent/src/datapath/virtual-queue.ts). Prints microseconds per step,
// and per credential verification by signer.
import { performance } from 'node:perf_hooks';
import { PassThroughHandler } from '../../agent/src/handshake/pass-through.ts';
import { IPV4_ACK, IPV4_SYN, IPV4_SYN_ACK, withValidChecksums } from '../lib/fixtures.ts';
import { join } from 'node:path';
import { CA_KEY_FILE, newAgent, SIGNING_KEY_TYPES, type SigningKeyType } from '../../agent/src/identity/issuance.ts';
import { readPrivateKey } from '../../agent/src/identity/key-files.ts';
import { verifyCredential } from '../../agent/src/token/credential.ts';
import { loadTrustBundles } from '../../agent/src/token/trust-bundle.ts';
import { createIssuerFixture } from '../lib/issuer-fixture.ts';
import { scratchDirectory } from '../lib/scratch.ts';
import { createDomain, identityHandler } from '../lib/identities.ts';
import { VirtualQueue } from '../../agent/src/datapath/virtual-queue.ts';

const SYN = withValidChecksums(IPV4_SYN);
const SYN_ACK = withValidChecksums(IPV4_SYN_ACK);
const ACK = withValidChecksums(IPV4_ACK);
const domain = await createDomain('bench.synpass');

async function side(id: string, signingKey: SigningKeyType) {
  const built = await identityHandler(domain, `${id}-${signingKey}`, {
    attributes: { 'app.name': id, 'app.tier': 'x', 'host.name': 'bench-host' },
    admission: { protectedPorts: 'all', allow: [{}], allowWithoutIdentity: [] },
    capacity: 1 << 20,
    signingKey,
  });
  return { ...built, queue: new VirtualQueue(built.handler) };
}

type Side = Awaited<ReturnType<typeof side>>;
let client: Side;
let server: Side;
const steps = { clientSyn: 0, serverSyn: 0, serverSynAck: 0, clientSynAck: 0, clientAck: 0, serverAck: 0 };

function timed(step: keyof typeof steps, run: () => { bytes: Uint8Array; dropped: boolean }): Uint8Array {
  const start = performance.now();
  const result = run();
  steps[step] += performance.now() - start;
  if (result.dropped) throw new Error(`${step} dropped`);
  return result.bytes;
}

function connection(sourcePort: number): void {
  const syn = Uint8Array.from(SYN);
  syn[20] = sourcePort >> 8;
  syn[21] = sourcePort & 0xff;
  const synAck = Uint8Array.from(SYN_ACK);
  synAck[22] = sourcePort >> 8;
  synAck[23] = sourcePort & 0xff;
  const ack = Uint8Array.from(ACK);
  ack[20] = sourcePort >> 8;
  ack[21] = sourcePort & 0xff;
  const synWire = timed('clientSyn', () => client.queue.deliver(withValidChecksums(syn), 'egress'));
  timed('serverSyn', () => server.queue.deliver(synWire, 'ingress'));
  const synAckWire = timed('serverSynAck', () => server.queue.deliver(withValidChecksums(synAck), 'egress'));
  const started = performance.now();
  const synAckIn = client.queue.deliver(synAckWire, 'ingress');
  steps.clientSynAck += performance.now() - started;
  if (synAckIn.dropped) throw new Error('syn-ack dropped');
  if (!synAckIn.released) {
    const ackWire = timed('clientAck', () => client.queue.deliver(withValidChecksums(ack), 'egress'));
    timed('serverAck', () => server.queue.deliver(ackWire, 'ingress'));
  }
}

// Every connection gets a port of its own: a flow the client still holds with the same ports
// and ISN would make the next SYN a retransmission.
let port = 1024;

function run(label: string | null, count: number, flush: boolean): void {
  for (const key of Object.keys(steps) as (keyof typeof steps)[]) steps[key] = 0;
  for (let i = 0; i < count; i++) {
    if (flush) {
      client.verifier.reconfigure(client.local.bundles, { kex: client.local.kex, kexRaw: client.local.kexRaw });
      server.verifier.reconfigure(server.local.bundles, { kex: server.local.kex, kexRaw: server.local.kexRaw });
      client.handler.forgetServers();
    }
    connection(port++);
  }
  if (label === null) return;
  const per = Object.fromEntries(Object.entries(steps).map(([k, v]) => [k, Number(((v * 1000) / count).toFixed(1))]));
  const total = Object.values(steps).reduce((sum, v) => sum + v, 0);
  process.stdout.write(`${label}: ${((total * 1000) / count).toFixed(0)} us per connection; by step ${JSON.stringify(per)}\n`);
}

// Agents sign with Ed25519 unless issued with --signing-key p256; peers import the key from the
// credential on first contact, which is where the two differ. Both pairs warm up before either
// is measured, or the first one measured pays for compiling the code.
const pairs: { signingKey: SigningKeyType; client: Side; server: Side }[] = [];
for (const signingKey of SIGNING_KEY_TYPES) pairs.push({ signingKey, client: await side('web', signingKey), server: await side('api', signingKey) });
for (const pair of pairs) {
  ({ client, server } = pair);
  connection(port++); // learn the peer
  run(null, 2000, false);
  run(null, 200, true);
}
for (const pair of pairs) {
  ({ client, server } = pair);
  run(`${pair.signingKey} agents, known pair`, 5000, false);
  run(`${pair.signingKey} agents, first contact`, 500, true);
}

// What a peer's verification of a credential costs by its signer, the part of a first contact
// the verifier's cache spares the next one: a certified issuing key (Ed25519, how the issuer
// signs) or the CA key (offline issuance with `synpass keys issue-agent`; Ed25519 unless the
// domain was made with `--ca-key p256`).
const issued = await createIssuerFixture(scratchDirectory('bench-issuer'), 'issued.synpass', ['127.0.0.1']);
const p256Domain = await createDomain('bench-p256.synpass', 'p256');
const signers = [
  ['issuing key (Ed25519)', readPrivateKey(issued.issuingKey), 'issued.synpass', loadTrustBundles(issued.bundles)],
  ['CA key (Ed25519)', readPrivateKey(join(issued.domainDirectory, CA_KEY_FILE)), 'issued.synpass', loadTrustBundles(issued.bundles)],
  ['CA key (P-256)', readPrivateKey(join(p256Domain.directory, CA_KEY_FILE)), p256Domain.name, p256Domain.bundles],
] as const;
for (const [signer, key, trustDomain, bundles] of signers) {
  const { credential } = await newAgent(key, { trustDomain, agentId: 'bench', namespaces: ['app'], ttlSeconds: 3600 });
  const nowSeconds = Math.floor(Date.now() / 1000);
  for (let i = 0; i < 500; i++) verifyCredential(credential, bundles, nowSeconds);
  const started = performance.now();
  for (let i = 0; i < 3000; i++) verifyCredential(credential, bundles, nowSeconds);
  process.stdout.write(`credential verification, signed by the ${signer}: ${(((performance.now() - started) * 1000) / 3000).toFixed(1)} us\n`);
}

const passThrough = new VirtualQueue(new PassThroughHandler());
const start = performance.now();
for (let i = 0; i < 20000; i++) passThrough.deliver(SYN, 'egress');
process.stdout.write(`pass-through egress SYN: ${(((performance.now() - start) * 1000) / 20000).toFixed(1)} us per packet\n`);
