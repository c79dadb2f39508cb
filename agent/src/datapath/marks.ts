// Packet and connection mark bits the agent owns. A verdict sets `pass` (judged: do not queue
// again) plus `track`/`release`; the SYNPASS-MARK chain copies track/release into the connmark
// and clears them from the packet, leaving only `judged` (and the kernel fast path's
// `untracked`), so other users of the mark see their own bits untouched.

export interface ConnectionMarks {
  /** Packet bit: the agent has judged this packet. */
  pass: number;
  /** Connmark bit: the agent follows this connection's handshake. */
  track: number;
  /** Connmark bit: handshake done, no further packet of the connection is queued. */
  release: number;
  /** Packet bit left on every packet after its verdict: a SYN that reaches INPUT or FORWARD
   * without it was never judged (the queue failed open, or no agent listened). */
  judged: number;
  /** Packet bit the kernel fast path sets on a SYN it charged to its source's bucket: the rules
   * do not charge it again (SYNPASS-IN-LIMIT). */
  budgeted: number;
  /** Packet bit the kernel fast path sets on every packet of a connection it judged: the notrack
   * rules leave it out of conntrack (rules.ts, buildNativeNotrack), and the mangle hooks do not
   * jump for it (its incoming SYN and SYN-ACK aside). */
  untracked: number;
  all: number;
}

/** The highest bit the six mark bits may start at. */
export const MAX_MARK_BASE = 0x04000000;

/** Six consecutive bits from `lowestBit` (default 0x00100000, clear of kube-proxy's 0x4000/0x8000). */
export function connectionMarks(lowestBit = 0x00100000): ConnectionMarks {
  if (!Number.isInteger(lowestBit) || lowestBit <= 0 || (lowestBit & (lowestBit - 1)) !== 0 || lowestBit > MAX_MARK_BASE) {
    throw new RangeError(`mark base must be a single bit between 0x1 and 0x${MAX_MARK_BASE.toString(16)}, got ${lowestBit}`);
  }
  const pass = lowestBit;
  const track = lowestBit * 2;
  const release = lowestBit * 4;
  const judged = lowestBit * 8;
  const budgeted = lowestBit * 16;
  const untracked = lowestBit * 32;
  return { pass, track, release, judged, budgeted, untracked, all: (pass | track | release | judged | budgeted | untracked) >>> 0 };
}
