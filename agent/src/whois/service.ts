// The peer-identity API as the agent runs it: the socket, the addon reading each caller's
// credentials, and a sweep that forgets identities of connections that are gone.
import type { Server } from 'node:net';
import { loadBinding } from '../native/addon.ts';
import type { Logger } from '../telemetry/log.ts';
import { closeUnixSocket } from '../telemetry/unix-socket.ts';
import { liveTcpSockets } from './proc-net-tcp.ts';
import { connectionKey, type PeerRegistry } from './registry.ts';
import { startWhoisServer } from './server.ts';

/** The longest a gone connection's identity stays; sooner when many connections come and go. */
export const WHOIS_SWEEP_MS = 30_000;
const SWEEP_CHECK_MS = 1_000;

export interface WhoisService {
  close(): Promise<void>;
}

export async function startWhoisService(socket: string, registry: PeerRegistry, log: Logger): Promise<WhoisService> {
  const binding = loadBinding();
  const server: Server = await startWhoisServer(
    socket,
    {
      registry,
      // Node exposes no peer credentials; the accepted socket's descriptor goes to the addon.
      credentialsOf: (connection) => binding.peerCredentials((connection as unknown as { _handle: { fd: number } })._handle.fd),
    },
    log,
  );
  let lastSweep = Date.now();
  const sweep = setInterval(() => {
    if (!registry.sweepDue && Date.now() - lastSweep < WHOIS_SWEEP_MS) return;
    registry.retain(new Set(liveTcpSockets().map((s) => connectionKey(s.local, s.remote))));
    lastSweep = Date.now();
  }, SWEEP_CHECK_MS);
  sweep.unref();
  log.info({ socket }, 'peer-identity API listening');
  return {
    close: async () => {
      clearInterval(sweep);
      await closeUnixSocket(server, socket);
    },
  };
}
