// Short runs of the attack-side scripts, so that a regression fails CI: scripts/fuzz-live with
// 20,000 packets, scripts/bench-flood for 5 s per kind, scripts/soak for 30 s (each in the mode the
// suite runs: with SYNPASS_TEST_KERNEL_FAST_PATH=1 on the kernel fast path). The full runs are
// on demand (their results are in docs/operations.md). Assertions are on behaviour, not speed.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { floodBench } from '../../scripts/benchmarks/flood.ts';
import { fuzzLive } from '../../scripts/benchmarks/fuzz-live.ts';
import { KERNEL_SHARE, soak } from '../../scripts/benchmarks/soak.ts';
import { isRoot, kernelByDefault } from '../../scripts/lib/lab.ts';

/** The memory target at defaults (docs/operations.md, Memory). */
const RSS_TARGET_MIB = 200;

describe('attack side, short runs', { skip: !isRoot() && 'needs root for network namespaces' }, () => {
  it('fuzz: 20,000 mutated handshake packets through a live agent: no crash, no hang, no SYN-ACK to the fuzzer or to the host it forges', async () => {
    const result = await fuzzLive({ packets: 20_000, perSecond: 20_000, seed: Number(process.env.FUZZ_SEED ?? 20261203), prefix: 'afz', net: 16 });
    assert.equal(result.sent, 20_000);
    assert.ok(result.agentAlive, 'the agent answers after the run');
    assert.equal(result.statusStalls, 0, 'the agent answered status all along');
    assert.equal(result.wrongfulAccepts, 0, 'api sent no SYN-ACK, to the fuzzer or to the address it forged');
    assert.ok(result.judged > 5_000, `the agent judged the mutations (${result.judged})`);
    for (const reason of ['malformed-handshake', 'bad-token-area', 'bad-tcp-options', 'unsupported-version']) {
      assert.ok((result.verdicts[`drop:${reason}`] ?? 0) > 0, `mutations reached ${reason}: ${JSON.stringify(result.verdicts)}`);
    }
    if (kernelByDefault()) {
      // Fast SYNs from web's address reach web's entry in api's kernel, whose MAC check and
      // replay table refuse every mutant; api's kernel accepts nothing.
      assert.equal(result.kernelAccepts, 0, `api's kernel accepted none: ${JSON.stringify(result.kernelCounters)}`);
      assert.equal(result.kernelCounters.synAccepted, 0);
      assert.ok((result.kernelCounters.synReplayed ?? 0) > 0, `unchanged proofs were replays: ${JSON.stringify(result.kernelCounters)}`);
      assert.ok((result.kernelCounters.synBadProof ?? 0) + (result.kernelCounters.synUnknownPeer ?? 0) > 0, `changed proofs were refused: ${JSON.stringify(result.kernelCounters)}`);
    }
    assert.ok(result.rssMiB.peak < RSS_TARGET_MIB, `peak RSS ${result.rssMiB.peak.toFixed(1)} MiB`);
    assert.ok(result.legitimateAfter, 'web still reaches api');
  });

  it('flood: flat out, token-less SYNs are held to their source rate in the kernel, forged first contacts to their signature budget; no legitimate connection or first contact fails', async () => {
    // A rate of half the default: what is tested is that the kernel holds the source to its
    // bucket, and a slower machine (a fresh root under load) judges 10,000 SYNs a second with no
    // margin left, so the queue could overflow for want of CPU rather than of a bound. The burst
    // is a quarter of the queue (datapath/rules.ts, sourceBurst): a second's worth let a slower
    // machine's queue overflow at the flood's first burst.
    const rows = await floodBench({ seconds: 5, rates: ['max'], kinds: ['token-less', 'forced-verify'], concurrency: 4, firstContacts: 10, queueRatePerSource: 5_000, prefix: 'afl', net: 17 });
    assert.deepEqual(rows.map((r) => r.kind), ['none', 'token-less', 'forced-verify', 'none']);
    for (const row of rows) {
      assert.equal(row.legitimate.failed, 0, `${row.kind}: ${row.legitimate.failed} legitimate connections failed`);
      assert.ok(row.legitimate.completed > 100, `${row.kind}: ${row.legitimate.completed} legitimate connections`);
      assert.deepEqual([row.firstContact.completed, row.firstContact.failed], [10, 0], `${row.kind}: first contacts from another source`);
      assert.ok(row.peakRssMiB < RSS_TARGET_MIB, `${row.kind}: peak RSS ${row.peakRssMiB.toFixed(1)} MiB`);
      assert.equal(row.logLinesDropped, 0);
    }
    const [, tokenLess, forged] = rows as [unknown, (typeof rows)[number], (typeof rows)[number]];
    assert.ok(tokenLess.sentPerSecond > 20_000, `the flood ran flat out (${tokenLess.sentPerSecond}/s)`);
    if (kernelByDefault()) {
      // The fast path's tc program drops token-less SYNs to a port closed to peers without
      // identity before any bucket or queue.
      const drops = Object.values(tokenLess.drops).reduce((sum, n) => sum + n, 0);
      assert.ok((tokenLess.drops['no-identity'] ?? 0) > 0.99 * drops, `the kernel dropped it as no-identity: ${JSON.stringify(tokenLess.drops)}`);
    } else {
      assert.ok(tokenLess.sourceLimited > tokenLess.judged, `the kernel dropped most of it (${tokenLess.sourceLimited}) before the queue (${tokenLess.judged} judged)`);
    }
    assert.equal(tokenLess.queueDropped, 0, 'the queue never overflowed');
    // Default budget: 1,000 signature checks a second per source, a second's worth at once.
    const checked = forged.drops['bad-proof'] ?? 0;
    const budget = 1_000 * (forged.phaseSeconds + 1);
    assert.ok(checked > 0 && checked <= budget, `signature checks held to the budget (${checked} in ${forged.phaseSeconds.toFixed(1)} s)`);
    assert.ok((forged.drops['signature-rate-limited'] ?? 0) > checked, JSON.stringify(forged.drops));
  });

  it('soak: 30 s of load, policy edits, key rotations and a flood: no legitimate connection fails, memory within the target', async () => {
    const result = await soak({ seconds: 30, reloadSeconds: 5, rotateSeconds: 10, sampleSeconds: 3, floodRate: 2_000, prefix: 'ask', net: 18 });
    assert.ok(result.agentAlive);
    assert.equal(result.connections.failed, 0, JSON.stringify(result.connections));
    assert.ok(result.connections.completed > 1_000);
    assert.ok(result.connections.firstContacts >= 5);
    assert.ok(result.heldConnectionEchoes, 'the connection open from the start still echoes');
    assert.ok(result.policyReloads >= 4, `${result.policyReloads} policy reloads`);
    assert.ok(result.rotations >= 2);
    assert.ok(result.floodSent > 40_000);
    assert.ok(result.peakRssMiB < RSS_TARGET_MIB, `peak RSS ${result.peakRssMiB.toFixed(1)} MiB`);
    if (kernelByDefault()) {
      // Known pairs stay on the fast path through policy edits and rotations (a rotation costs each pair one first contact).
      const total = result.connections.completed + result.connections.firstContacts;
      assert.ok(result.kernelAccepted >= KERNEL_SHARE * total, `api's kernel accepted ${result.kernelAccepted} of ${total}`);
    }
    for (const [name, table] of Object.entries(result.tables)) assert.ok(table.entries <= table.capacity, `${name}: ${table.entries} of ${table.capacity}`);
  });
});
