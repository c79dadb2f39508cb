// The one error base: a `code` from a closed string union that callers branch on, and context
// that says which packet, rule, file or field failed. Misuse by a caller stays a
// TypeError/RangeError. The CLI prints a SynpassError as one line a person can act on.

export class SynpassError<Code extends string = string> extends Error {
  constructor(
    readonly code: Code,
    message: string,
    readonly context: Readonly<Record<string, number | string>> = {},
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** A failed file-system call in words a person acts on ("does not exist", not "ENOENT: scandir"). */
export function describeFileError(error: unknown): string {
  switch ((error as NodeJS.ErrnoException | undefined)?.code) {
    case 'ENOENT':
      return 'does not exist';
    case 'ENOTDIR':
      return 'is not a directory (or a part of its path is not)';
    case 'EISDIR':
      return 'is a directory, not a file';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    default:
      return error instanceof Error ? error.message : String(error);
  }
}
