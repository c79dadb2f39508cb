// Segments that race the handshake's last verdicts, with real packets: a client that closes at
// once sends its FIN right behind the ACK that carries its proof. The FIN may be queued behind
// that ACK on the client (and carry the same proof), or leave unqueued on another CPU and reach
// the server before the ACK. Neither may cost the connection a dropped segment.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startIdentityLab, type IdentityLab } from '../../scripts/lib/identity-lab.ts';
import { isRoot, ROOT, type AgentHandle, type Lab } from '../../scripts/lib/lab.ts';

const LOAD = join(ROOT, 'scripts/benchmarks/load.ts');
const PORT = 8080;
const CONNECTIONS = 600;

describe('handshake races end to end', { skip: !isRoot() && 'needs root for network namespaces' }, () => {
  let fixture: IdentityLab;
  let lab: Lab;
  let web: AgentHandle;
  let api: AgentHandle;

  before(async () => {
    // At warn level the agents are as quick as in production, which is when the races show.
    const quiet = { env: { SYNPASS_LOG_LEVEL: 'warn' } };
    fixture = await startIdentityLab({ prefix: 'hr', net: 15, api: quiet, web: quiet, server: { port: PORT, kind: 'http' } });
    ({ lab, api, web } = fixture);
  });

  after(async () => {
    await fixture.down();
  });

  it('first-contact connections whose client closes at once lose no segment', async () => {
    // Both agents forget each other before every connect, so each one is a full first contact
    // with a proof ACK; the client ends the connection as soon as it is up.
    const run = lab.spawn('web', [process.execPath, '--import', 'tsx', LOAD, 'sequential', lab.address('api'), String(PORT), String(CONNECTIONS), web.socket, api.socket]);
    const result = await run.waitFor(() => true, 90_000);
    assert.equal(result.count, CONNECTIONS);
    const drops = (await api.status()).verdicts.filter((v) => v.action === 'drop');
    assert.deepEqual(drops, [], 'api dropped no segment');
    const accepted = (await api.status()).verdicts.find((v) => v.direction === 'ingress' && v.action === 'accept' && v.reason === 'ok')?.count ?? 0;
    assert.ok(accepted >= 2 * CONNECTIONS, `every SYN and proof ACK accepted (${accepted})`);
  });
});
