// Named environment variables of the agent, as env.<name in lower case with - for _>.
import type { Attribute } from '../../token/identity-token.ts';
import { attestorKind, attributes, type Attestor } from './attestor.ts';

export class EnvironmentAttestor implements Attestor {
  readonly name = 'env';
  readonly namespaces = ['env'];
  constructor(
    private readonly names: string[],
    private readonly environment: NodeJS.ProcessEnv = process.env,
  ) {}
  attest(): Promise<Map<string, Attribute>> {
    const values: Record<string, string | undefined> = {};
    for (const name of this.names) values[`env.${name.toLowerCase().replaceAll('_', '-')}`] = this.environment[name];
    return Promise.resolve(attributes(this.name, values));
  }
}

export const environmentKind = attestorKind({
  key: 'env',
  field: (types) => types.strings('environment variables to attest, e.g. `[DEPLOY_ZONE]` gives env.deploy-zone', 'a list of variable names'),
  create: (names: string[]) => (names.length > 0 ? new EnvironmentAttestor(names) : null),
});
