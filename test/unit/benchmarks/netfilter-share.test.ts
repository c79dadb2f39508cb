import { it } from 'node:test';
import assert from 'node:assert/strict';
import { shareOf } from '../../../scripts/benchmarks/netfilter-share.ts';

it('the bench splits busy CPU into rules, conntrack and BPF programs, leaving the idle task out', () => {
  const report = [
    '    50.00%  swapper  [k] default_idle',
    '     2.00%  iperf3   [k] nft_do_chain',
    '     1.00%  iperf3   [k] nf_hook_slow',
    '     1.00%  iperf3   [k] ipv4_conntrack_in',
    '     0.50%  iperf3   [k] bpf_prog_bb404e52367ad96a_synpass_ingress',
    '     0.50%  iperf3   [k] bpf_skb_load_bytes',
    '    45.00%  iperf3   [k] copy_user_enhanced_fast_string',
  ].join('\n');
  const share = shareOf(report);
  assert.ok(share);
  // Percent of the 50% that was busy.
  assert.deepEqual(share, { rules: 6, conntrack: 2, programs: 1 });
  assert.equal(shareOf('    100.00%  swapper  [k] default_idle'), null);
});
