// Who may open a connection to this host, until the policy engine takes over: protected ports
// admit only verified identities that an `allow` entry names; listed networks may reach listed
// ports without an identity. Unprotected ports admit everyone.
import { type BlockList, isIPv4 } from 'node:net';
import { networkList } from '../cidr.ts';
import type { VerifiedIdentity } from '../token/identity-token.ts';

export interface AllowIdentity {
  /** spiffe:// URI; a trailing * matches any suffix. */
  subject?: string | undefined;
  attributes?: Record<string, string>;
  ports?: number[] | undefined;
}

export interface AllowWithoutIdentity {
  cidr: string;
  ports?: number[] | undefined;
}

export interface AdmissionConfig {
  /** Ports that require an accepted identity; "all" protects every port. */
  protectedPorts: number[] | 'all';
  allow: AllowIdentity[];
  allowWithoutIdentity: AllowWithoutIdentity[];
}

function subjectMatches(pattern: string | undefined, subject: string): boolean {
  if (pattern === undefined) return true;
  return pattern.endsWith('*') ? subject.startsWith(pattern.slice(0, -1)) : subject === pattern;
}

function portMatches(ports: number[] | undefined, port: number): boolean {
  return ports === undefined || ports.includes(port);
}

interface CompiledAllow {
  subject: string | undefined;
  attributes: [string, string][];
  ports: number[] | undefined;
}

export class Admission {
  private readonly anonymous: { list: BlockList; ports: number[] | undefined }[];
  private readonly allow: CompiledAllow[];

  constructor(private readonly config: AdmissionConfig) {
    this.allow = config.allow.map((rule) => ({ subject: rule.subject, attributes: Object.entries(rule.attributes ?? {}), ports: rule.ports }));
    this.anonymous = config.allowWithoutIdentity.map((entry) => ({ list: networkList([entry.cidr]), ports: entry.ports }));
  }

  isProtected(port: number): boolean {
    return this.config.protectedPorts === 'all' || this.config.protectedPorts.includes(port);
  }

  admitsIdentity(identity: VerifiedIdentity, port: number): boolean {
    if (!this.isProtected(port)) return true;
    for (const rule of this.allow) {
      if (!portMatches(rule.ports, port) || !subjectMatches(rule.subject, identity.subject)) continue;
      if (rule.attributes.every(([name, value]) => identity.attributes[name] === value)) return true;
    }
    return false;
  }

  /** Whether no peer without identity, from any address, is admitted to `port`. */
  closedToAnonymous(port: number): boolean {
    return this.isProtected(port) && !this.anonymous.some((entry) => portMatches(entry.ports, port));
  }

  admitsWithoutIdentity(source: string, port: number): boolean {
    if (!this.isProtected(port)) return true;
    const family = isIPv4(source) ? 'ipv4' : 'ipv6';
    return this.anonymous.some((entry) => portMatches(entry.ports, port) && entry.list.check(source, family));
  }
}
