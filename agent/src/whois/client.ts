// Asks the agent's peer-identity API about one connection (see server.ts for the protocol).
import { connect } from 'node:net';
import type { WhoisAnswer } from './server.ts';

export function askWhois(socketPath: string, a: string, b: string): Promise<WhoisAnswer> {
  return new Promise((resolve, reject) => {
    const socket = connect(socketPath, () => socket.write(`${JSON.stringify({ a, b })}\n`));
    let buffer = '';
    socket.setEncoding('utf8');
    socket.setTimeout(5_000, () => socket.destroy(new Error('timed out')));
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      const end = buffer.indexOf('\n');
      if (end < 0) return;
      socket.end();
      try {
        resolve(JSON.parse(buffer.slice(0, end)) as WhoisAnswer);
      } catch (error) {
        reject(error instanceof Error ? error : new Error(String(error)));
      }
    });
    socket.on('error', reject);
  });
}
