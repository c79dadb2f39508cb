// Labels written in the configuration, vouched for by the agent as they stand.
import { namespaceOf, type Attribute } from '../../token/identity-token.ts';
import { attestorKind, attributes, type Attestor } from './attestor.ts';

export class StaticAttestor implements Attestor {
  readonly name = 'static';
  readonly namespaces: readonly string[];
  constructor(private readonly labels: Record<string, string>) {
    this.namespaces = [...new Set(Object.keys(labels).map(namespaceOf))];
  }
  attest(): Promise<Map<string, Attribute>> {
    return Promise.resolve(attributes(this.name, this.labels));
  }
}

export const staticKind = attestorKind({
  key: 'static',
  field: (types) => types.stringMap('labels of this host, e.g. `{ app.name: web, app.tier: frontend }`'),
  create: (labels: Record<string, string>) => new StaticAttestor(labels),
});
