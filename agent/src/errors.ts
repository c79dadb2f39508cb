// The one error base: a `code` from a closed string union that callers branch on, and context
// that says which packet, rule or claim failed. Misuse by a caller stays a TypeError/RangeError.

export class SynpassError<Code extends string> extends Error {
  constructor(
    readonly code: Code,
    message: string,
    readonly context: Readonly<Record<string, number | string>> = {},
  ) {
    super(message);
  }
}
