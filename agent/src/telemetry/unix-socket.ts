// The agent's local endpoints (status, whois) listen on unix sockets whose file mode decides
// who may connect; a stale socket file from a crashed agent is replaced.
import { chmod, mkdir, rm } from 'node:fs/promises';
import type { Server } from 'node:net';
import { dirname } from 'node:path';

export async function listenOnUnixSocket(server: Server, path: string, mode: number): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await rm(path, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      resolve();
    });
  });
  await chmod(path, mode);
}

export async function closeUnixSocket(server: Server, path: string): Promise<void> {
  await new Promise<void>((resolve) => server.close(() => { resolve(); }));
  await rm(path, { force: true });
}
