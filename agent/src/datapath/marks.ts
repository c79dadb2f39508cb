// Packet and connection mark bits the agent owns. A verdict sets `pass` (judged: do not queue
// again) plus `track`/`release`; the SYNPASS-MARK chain copies track/release into the connmark
// and clears all three from the packet, so other users of the mark see their bits untouched.

export interface ConnectionMarks {
  /** Packet bit: the agent has judged this packet. */
  pass: number;
  /** Connmark bit: the agent follows this connection's handshake. */
  track: number;
  /** Connmark bit: handshake done, no further packet of the connection is queued. */
  release: number;
  all: number;
}

/** Three consecutive bits from `lowestBit` (default 0x00100000, clear of kube-proxy's 0x4000/0x8000). */
export function connectionMarks(lowestBit = 0x00100000): ConnectionMarks {
  if (!Number.isInteger(lowestBit) || lowestBit <= 0 || (lowestBit & (lowestBit - 1)) !== 0 || lowestBit > 0x20000000) {
    throw new RangeError(`mark base must be a single bit between 0x1 and 0x20000000, got ${lowestBit}`);
  }
  const pass = lowestBit;
  const track = lowestBit * 2;
  const release = lowestBit * 4;
  return { pass, track, release, all: pass | track | release };
}
