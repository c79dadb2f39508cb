// Live TCP sockets of this network namespace and their owners, from /proc/net/tcp and tcp6.
// The whois API uses it to check who owns a connection and whether it still exists.
import { readFileSync } from 'node:fs';

export interface TcpSocket {
  local: string;
  remote: string;
  state: number;
  uid: number;
}

/** TCP states that still carry a connection an application can ask about (ESTABLISHED..CLOSING). */
const LIVE_STATES = new Set([1, 2, 3, 4, 5, 8, 9, 11]);

function ipv4(hex: string): string {
  // The kernel prints the address as one host-order 32-bit word (little-endian here).
  const value = Number.parseInt(hex, 16);
  return [value & 0xff, (value >>> 8) & 0xff, (value >>> 16) & 0xff, (value >>> 24) & 0xff].join('.');
}

function ipv6(hex: string): string {
  const groups: string[] = [];
  for (let word = 0; word < 4; word++) {
    const chunk = hex.slice(word * 8, word * 8 + 8);
    const bytes = [chunk.slice(6, 8), chunk.slice(4, 6), chunk.slice(2, 4), chunk.slice(0, 2)].join('');
    groups.push(Number.parseInt(bytes.slice(0, 4), 16).toString(16), Number.parseInt(bytes.slice(4, 8), 16).toString(16));
  }
  // A dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d; report them as the IPv4 they are.
  if (groups.slice(0, 5).every((g) => g === '0') && groups[5] === 'ffff') {
    const high = Number.parseInt(groups[6]!, 16);
    const low = Number.parseInt(groups[7]!, 16);
    return [high >> 8, high & 0xff, low >> 8, low & 0xff].join('.');
  }
  return groups.join(':');
}

function endpoint(text: string): string {
  const [address, port] = text.split(':') as [string, string];
  const host = address.length === 8 ? ipv4(address) : ipv6(address);
  return `${host}:${Number.parseInt(port, 16)}`;
}

export function parseProcNetTcp(text: string): TcpSocket[] {
  const sockets: TcpSocket[] = [];
  for (const line of text.split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 8 || !fields[1]?.includes(':')) continue;
    sockets.push({ local: endpoint(fields[1]), remote: endpoint(fields[2]!), state: Number.parseInt(fields[3]!, 16), uid: Number(fields[7]) });
  }
  return sockets;
}

export function liveTcpSockets(): TcpSocket[] {
  const read = (path: string) => {
    try {
      return parseProcNetTcp(readFileSync(path, 'utf8'));
    } catch {
      return [];
    }
  };
  return [...read('/proc/net/tcp'), ...read('/proc/net/tcp6')].filter((socket) => LIVE_STATES.has(socket.state));
}
