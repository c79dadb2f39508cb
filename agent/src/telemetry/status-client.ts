// Talks to the status endpoint of a running agent (see status-server.ts): reads its status,
// and has it forget its peer caches.
import { request } from 'node:http';

export async function fetchStatus(socketPath: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path: '/status', method: 'GET', timeout: 5_000 }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (body += chunk));
      response.on('end', () => {
        try {
          resolve(JSON.parse(body));
        } catch (error) {
          reject(error instanceof Error ? error : new Error(String(error)));
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error('status request timed out')));
    req.on('error', reject);
    req.end();
  });
}

/** Forgets every verified peer and pair key of the agent, so its next connection is a first contact. */
export function flushCaches(socketPath: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path: '/caches/flush', method: 'POST', timeout: 5_000 }, (response) => {
      response.resume();
      response.on('end', resolve);
    });
    req.on('timeout', () => req.destroy(new Error('cache flush timed out')));
    req.on('error', reject);
    req.end();
  });
}
