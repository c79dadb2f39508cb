// Holds an NFQUEUE queue, as an agent still shutting down would: binds it, prints
// {"bound":N}, and lets it go when stdin closes (or after 60 s: every test process is bounded).
import { allocateQueueBuffers, loadBinding } from '../../agent/src/native/addon.ts';

const queueNumber = Number(process.argv[2]);
const buffers = allocateQueueBuffers(4);
const queue = new (loadBinding().NfQueue)({
  queues: [queueNumber],
  maxLength: 16,
  failOpen: false,
  socketBufferBytes: 1 << 20,
  input: buffers.input,
  meta: buffers.meta,
  counters: buffers.counters,
  onBatch: () => undefined,
});
queue.start();
process.stdout.write(`${JSON.stringify({ bound: queueNumber })}\n`);

function release(): void {
  queue.close();
  process.exit(0);
}
setTimeout(release, 60_000).unref();
process.stdin.on('end', release);
process.stdin.resume();
