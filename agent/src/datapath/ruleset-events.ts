// Word that this network namespace's netfilter ruleset changed (native/src/ruleset_events.cc):
// nf_tables notifies every committed change, iptables-nft's too, so a flush or a new NAT rule is
// known at once instead of at the next rule check. The legacy iptables backend notifies nothing.
import { loadBinding } from '../native/addon.ts';

export interface RulesetWatch {
  close(): void;
}

/** Calls `changed` after every burst of ruleset changes; throws (with `errno`) when the kernel refuses the subscription. */
export function watchRulesetChanges(changed: () => void): RulesetWatch {
  const { RulesetEvents } = loadBinding();
  return new RulesetEvents(() => {
    changed();
  });
}
