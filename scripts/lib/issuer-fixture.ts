// A trust domain with a certified issuer, for tests, the lab and the demo: CA, issuing key and
// its certificate in the bundle, a TLS certificate for the issuer's address (openssl), and a
// join-token directory.
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync } from 'node:fs';
import { basename, join } from 'node:path';
import { certifyIssuerKey, initDomain } from '../../agent/src/identity/issuance.ts';
import { createIssuingKey } from '../../agent/src/issuer/issuing-key.ts';
import { JoinTokenStore } from '../../agent/src/issuer/join-tokens.ts';

export interface IssuerFixture {
  trustDomain: string;
  /** The domain directory: CA key and bundle. */
  domainDirectory: string;
  /** Only the bundle, as agents get it. */
  bundles: string;
  issuingKey: string;
  tlsCertificate: string;
  tlsKey: string;
  joinTokens: JoinTokenStore;
}

/** A self-signed certificate for `addresses` (IP SANs); it is its own CA for the agents. */
export function makeTlsCertificate(directory: string, addresses: readonly string[]): { certificate: string; key: string } {
  const certificate = join(directory, 'issuer-tls.crt');
  const key = join(directory, 'issuer-tls.key');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
    '-subj', '/CN=synpass-issuer', '-addext', `subjectAltName=${addresses.map((address) => `IP:${address}`).join(',')}`,
    '-keyout', key, '-out', certificate,
  ], { stdio: 'ignore' });
  return { certificate, key };
}

export async function createIssuerFixture(
  directory: string,
  trustDomain: string,
  addresses: readonly string[],
  options: { certificateTtlSeconds?: number; certify?: boolean } = {},
): Promise<IssuerFixture> {
  const domainDirectory = join(directory, 'domain');
  const { bundle } = await initDomain(trustDomain, domainDirectory);
  const issuerDirectory = join(directory, 'issuer');
  const issuing = await createIssuingKey(issuerDirectory);
  if (options.certify !== false) {
    await certifyIssuerKey({ domainDirectory, trustDomain, name: 'issuer-1', publicKeyFile: issuing.publicKey, ttlSeconds: options.certificateTtlSeconds ?? 86_400 });
  }
  const tls = makeTlsCertificate(issuerDirectory, addresses);
  // Agents and the issuer get the bundle alone, never the directory that holds the CA key.
  const bundles = join(directory, 'bundles');
  mkdirSync(bundles);
  copyFileSync(bundle, join(bundles, basename(bundle)));
  return {
    trustDomain,
    domainDirectory,
    bundles,
    issuingKey: issuing.key,
    tlsCertificate: tls.certificate,
    tlsKey: tls.key,
    joinTokens: new JoinTokenStore(join(directory, 'join-tokens')),
  };
}
