// The I/O edge of datapath/server-reset.ts: sends the reset a refused local SYN-ACK asks for,
// through the addon's raw socket, and counts what went and what the kernel refused. A refused
// send changes nothing else: the SYN-ACK is dropped all the same, and so are its retransmits.
import type { ParsedPacket } from '../datapath/packet.ts';
import { buildServerReset, SERVER_RESET_MAX_BYTES } from '../datapath/server-reset.ts';
import type { Logger } from '../telemetry/log.ts';

export interface ServerResetCounts {
  sent: number;
  failed: number;
}

export class ServerResetter {
  readonly counts: ServerResetCounts = { sent: 0, failed: 0 };
  private readonly packet = new Uint8Array(SERVER_RESET_MAX_BYTES);
  private warned = false;

  constructor(
    private readonly send: (packet: Uint8Array) => void,
    private readonly log: Logger,
  ) {}

  readonly reset = (synAck: ParsedPacket): void => {
    const length = buildServerReset(synAck, this.packet);
    try {
      this.send(this.packet.subarray(0, length));
      this.counts.sent += 1;
    } catch (error) {
      this.counts.failed += 1;
      // Once: a kernel that refuses one refuses them all, and a flood must not flood the log.
      if (!this.warned) this.log.warn({ err: error }, 'a reset to a local server whose SYN-ACK was refused could not be sent; its retransmits are refused as they come');
      this.warned = true;
    }
  };
}
