// An example attestor: the kernel's lockdown mode (none, integrity, confidentiality), so policy
// can ask for `kernel.lockdown: confidentiality`. To add it to synpass: this file as
// agent/src/identity/attestors/lockdown.ts (imports from './attestor.ts' and
// '../../token/identity-token.ts'), and `lockdownKind` in the list in registry.ts. The
// configuration gains `attestors.lockdown: true`, its docs row and SYNPASS_ATTESTORS_LOCKDOWN.
import { readFile } from 'node:fs/promises';
import { attestorKind, attributes, type Attestor } from '../../agent/src/identity/attestors/attestor.ts';
import type { Attribute } from '../../agent/src/token/identity-token.ts';

export class LockdownAttestor implements Attestor {
  readonly name = 'kernel';
  readonly namespaces = ['kernel'];
  constructor(private readonly path = '/sys/kernel/security/lockdown') {}
  async attest(): Promise<Map<string, Attribute>> {
    // The file reads "none [integrity] confidentiality": the mode in force is bracketed.
    const text = await readFile(this.path, 'utf8').catch(() => '');
    return attributes(this.name, { 'kernel.lockdown': /\[(\w+)\]/.exec(text)?.[1] });
  }
}

export const lockdownKind = attestorKind({
  key: 'lockdown',
  field: (types) => types.boolean(false, 'attest kernel.lockdown, the kernel lockdown mode'),
  create: (on: boolean) => (on ? new LockdownAttestor() : null),
});
