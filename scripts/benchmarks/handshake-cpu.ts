// CPU per handshake packet in the agent, without the kernel: the real engine and identity
// handler on a virtual wire (test/support/virtual-wire.ts). Prints microseconds per step.
import { performance } from 'node:perf_hooks';
import { PassThroughHandler } from '../../agent/src/handshake/pass-through.ts';
import { IPV4_ACK, IPV4_SYN, IPV4_SYN_ACK, withValidChecksums } from '../../test/support/fixtures.ts';
import { createDomain, identityHandler } from '../../test/support/identities.ts';
import { VirtualQueue } from '../../test/support/virtual-wire.ts';

const SYN = withValidChecksums(IPV4_SYN);
const SYN_ACK = withValidChecksums(IPV4_SYN_ACK);
const ACK = withValidChecksums(IPV4_ACK);
const domain = await createDomain('bench.synpass');

async function side(id: string) {
  const built = await identityHandler(domain, id, {
    attributes: { 'app.name': id, 'app.tier': 'x', 'host.name': 'bench-host' },
    admission: { protectedPorts: 'all', allow: [{}], allowWithoutIdentity: [] },
    capacity: 1 << 20,
  });
  return { ...built, queue: new VirtualQueue(built.handler) };
}

const client = await side('web');
const server = await side('api');
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

function run(label: string, count: number, flush: boolean): void {
  for (const key of Object.keys(steps) as (keyof typeof steps)[]) steps[key] = 0;
  let port = flush ? 20000 : 1024;
  for (let i = 0; i < count; i++) {
    if (flush) {
      client.verifier.reconfigure(client.local.bundles, { kex: client.local.kex, kexRaw: client.local.kexRaw });
      server.verifier.reconfigure(server.local.bundles, { kex: server.local.kex, kexRaw: server.local.kexRaw });
      client.handler.forgetServers();
    }
    connection(port++);
  }
  const per = Object.fromEntries(Object.entries(steps).map(([k, v]) => [k, Number(((v * 1000) / count).toFixed(1))]));
  process.stdout.write(`${label}: microseconds per connection by step ${JSON.stringify(per)}\n`);
}

connection(1000); // warm-up and learn the peer
run('known pair', 5000, false);
run('first contact', 500, true);

const passThrough = new VirtualQueue(new PassThroughHandler());
const start = performance.now();
for (let i = 0; i < 20000; i++) passThrough.deliver(SYN, 'egress');
process.stdout.write(`pass-through egress SYN: ${(((performance.now() - start) * 1000) / 20000).toFixed(1)} us per packet\n`);
