// The kernel fast path's pinned maps as tests read them, through bpftool: every entry's key and
// value as bytes (numbers in them in the host's byte order, as native/bpf/fast_path.h lays out).
import { execFileSync } from 'node:child_process';

export interface MapEntry {
  key: Buffer;
  value: Buffer;
}

/** Every entry of the map pinned at `path`. */
export function dumpPinnedMap(path: string): MapEntry[] {
  const entries = JSON.parse(execFileSync('bpftool', ['map', 'dump', 'pinned', path, '-j'], { encoding: 'utf8', maxBuffer: 256 << 20 })) as { key: string[]; value: string[] }[];
  return entries.map(({ key, value }) => ({ key: Buffer.from(key.map(Number)), value: Buffer.from(value.map(Number)) }));
}

/** An IPv4 address as the maps hold it (::ffff:a.b.c.d at `offset`), dotted; null for an IPv6 one. */
export function mappedIpv4(bytes: Buffer, offset = 0): string | null {
  const mapped = bytes.subarray(offset, offset + 10).every((byte) => byte === 0) && bytes[offset + 10] === 0xff && bytes[offset + 11] === 0xff;
  return mapped ? [...bytes.subarray(offset + 12, offset + 16)].join('.') : null;
}

/** A fast_pod_pairs key (struct pod_pair_key: client, server, port) over IPv4 as `client>server:port`; null for an IPv6 pair. */
export function ipv4PodPair(key: Buffer): string | null {
  const [client, server] = [mappedIpv4(key, 0), mappedIpv4(key, 16)];
  return client === null || server === null ? null : `${client}>${server}:${key.readUInt16LE(32)}`;
}
