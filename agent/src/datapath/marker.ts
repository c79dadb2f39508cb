// The synpass marker: an RFC 6994 experimental TCP option (kind 253) carrying a 16-bit ExID,
// so it cannot be mistaken for TCP Fast Open (kind 34) or another experiment that shares 253.
// A packet with the marker carries a token area as the first bytes of its TCP payload:
//   u16 body length (network order) | body | original payload, if any

export const MARKER_KIND = 253;
export const MARKER_LENGTH = 4;
/** Unregistered ExID for synpass ("SP" with the high bit set to stay clear of ASCII-looking IDs). */
export const MARKER_EXID = 0xd350;
export const TOKEN_AREA_HEADER = 2;
export const MAX_TCP_HEADER = 60;
