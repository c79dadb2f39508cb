// Argument parsers the commands share.
import { InvalidArgumentError } from 'commander';
import { loadAgentConfig } from '../runtime/config.ts';
import { credentialNamespaces } from '../runtime/handlers.ts';

export function integer(min: number, max: number) {
  return (value: string): number => {
    const parsed = Number(value);
    if (!Number.isInteger(parsed) || parsed < min || parsed > max) {
      throw new InvalidArgumentError(`expected an integer from ${min} to ${max}`);
    }
    return parsed;
  };
}

/** The attribute namespaces a credential grants: from --namespaces, or every one --for-config's attestors assert. */
export function namespacesOf(flags: { forConfig?: string; namespaces?: string }): string[] {
  if ((flags.forConfig === undefined) === (flags.namespaces === undefined)) {
    throw new InvalidArgumentError('give either --for-config <agent config> or --namespaces <list>');
  }
  return flags.forConfig === undefined
    ? flags.namespaces!.split(',').map((n) => n.trim()).filter(Boolean)
    : credentialNamespaces(loadAgentConfig(flags.forConfig));
}
