// The machine itself: host.name, host.os, host.kernel, host.machine-id.
import { readFile } from 'node:fs/promises';
import { hostname, platform, release } from 'node:os';
import type { Attribute } from '../../token/identity-token.ts';
import { attestorKind, attributes, type Attestor } from './attestor.ts';

export class HostAttestor implements Attestor {
  readonly name = 'host';
  readonly namespaces = ['host'];
  constructor(private readonly machineIdPath = '/etc/machine-id') {}
  async attest(): Promise<Map<string, Attribute>> {
    const machineId = await readFile(this.machineIdPath, 'utf8').then((text) => text.trim(), () => undefined);
    return attributes(this.name, {
      'host.name': hostname(),
      'host.os': platform(),
      'host.kernel': release(),
      'host.machine-id': machineId,
    });
  }
}

export const hostKind = attestorKind({
  key: 'host',
  field: (types) => types.boolean(false, 'attest host.name, host.os, host.kernel and host.machine-id'),
  create: (on: boolean) => (on ? new HostAttestor() : null),
});
