// CIDR validation for command-line and config input, via node:net's own address parser.
import { BlockList, isIP } from 'node:net';

/** Returns the CIDR in canonical "address/prefix" form, or throws a RangeError naming the problem. */
export function parseCidr(value: string): string {
  const [address, prefixText, ...rest] = value.split('/');
  const family = isIP(address ?? '');
  if (family === 0 || rest.length > 0) throw new RangeError(`not an IP network: "${value}"`);
  const maxPrefix = family === 4 ? 32 : 128;
  const prefix = prefixText === undefined ? maxPrefix : Number(prefixText);
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > maxPrefix) {
    throw new RangeError(`prefix of "${value}" must be 0..${maxPrefix}`);
  }
  new BlockList().addSubnet(address!, prefix, family === 4 ? 'ipv4' : 'ipv6');
  return `${address!}/${prefix}`;
}

/** The networks of canonical CIDRs (parseCidr) as one BlockList, to test addresses against. */
export function networkList(cidrs: readonly string[]): BlockList {
  const list = new BlockList();
  for (const cidr of cidrs) {
    const [address, prefix] = cidr.split('/');
    list.addSubnet(address!, Number(prefix), isIP(address!) === 4 ? 'ipv4' : 'ipv6');
  }
  return list;
}

/** Whether an address lies in any of the canonical CIDRs (parseCidr). */
export function inNetworks(cidrs: readonly string[]): (address: string) => boolean {
  const list = networkList(cidrs);
  return (address) => list.check(address, isIP(address) === 4 ? 'ipv4' : 'ipv6');
}
