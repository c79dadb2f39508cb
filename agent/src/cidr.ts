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
