// Talks to the status endpoint of a running agent (see status-server.ts): reads its status,
// waits until it runs, and has it forget its peer caches.
import { request } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { SynpassError } from '../errors.ts';

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

/** No agent reported `running` in time; the message says what was seen last. */
export class AgentNotRunningError extends SynpassError<'agent-not-running'> {
  override readonly name = 'AgentNotRunningError';
}

/**
 * Asks the agent at `socketPath` for its status every `pollMs` until it reports `running` (its
 * rules in place, and its kernel fast path where that runs): resolves with the milliseconds it
 * took, or rejects with AgentNotRunningError after `timeoutMs`. A socket nobody answers on (an
 * agent not started yet, or still enrolling) is waited for like a starting agent.
 */
export async function waitUntilRunning(socketPath: string, timeoutMs: number, pollMs = 100): Promise<number> {
  const started = Date.now();
  for (;;) {
    let seen: string;
    try {
      const state = (await fetchStatus(socketPath) as { state?: unknown }).state;
      if (state === 'running') return Date.now() - started;
      seen = `state ${String(state)}`;
    } catch (error) {
      seen = `no agent answers (${(error as Error).message})`;
    }
    const left = timeoutMs - (Date.now() - started);
    if (left <= 0) {
      throw new AgentNotRunningError('agent-not-running', `no agent running at ${socketPath} within ${timeoutMs / 1000} s: ${seen}`, { socketPath, timeoutMs });
    }
    await sleep(Math.min(pollMs, left));
  }
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
