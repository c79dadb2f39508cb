// The peer-identity API as the agent runs it: the socket, the addon reading each caller's
// credentials, and a sweep that forgets identities of connections that are gone.
import type { Server } from 'node:net';
import { loadBinding } from '../native/addon.ts';
import type { Logger } from '../telemetry/log.ts';
import { closeUnixSocket } from '../telemetry/unix-socket.ts';
import { liveTcpSockets } from './proc-net-tcp.ts';
import type { PeerRegistry } from './registry.ts';
import { startWhoisServer } from './server.ts';
import type { ConntrackLookup } from './translation.ts';

/** The longest a gone connection's identity stays; sooner when many connections come and go. */
export const WHOIS_SWEEP_MS = 30_000;
const SWEEP_CHECK_MS = 1_000;

export interface WhoisService {
  close(): Promise<void>;
}

export async function startWhoisService(socket: string, registry: PeerRegistry, log: Logger): Promise<WhoisService> {
  const binding = loadBinding();
  let conntrackRefused = false;
  const conntrack: ConntrackLookup = (...tuple) => {
    try {
      return binding.conntrackEntry(...tuple);
    } catch (error) {
      // Without conntrack (no ctnetlink, no CAP_NET_ADMIN) whois still answers from the socket's addresses.
      if (!conntrackRefused) log.warn({ err: error }, 'whois: conntrack lookup refused; a connection a NAT on this host translates is not found');
      conntrackRefused = true;
      return null;
    }
  };
  const server: Server = await startWhoisServer(
    socket,
    {
      registry,
      // Node exposes no peer credentials; the accepted socket's descriptor goes to the addon.
      credentialsOf: (connection) => binding.peerCredentials((connection as unknown as { _handle: { fd: number } })._handle.fd),
      conntrack,
    },
    log,
  );
  let lastSweep = Date.now();
  const sweep = setInterval(() => {
    if (!registry.sweepDue && Date.now() - lastSweep < WHOIS_SWEEP_MS) return;
    registry.retain(liveTcpSockets());
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
