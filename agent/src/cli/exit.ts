// How the CLI ends: one line a person can act on for anything they can fix, and exit codes a
// script can branch on. 0: yes / done; 1: a definite no (a policy denies, a test fails, a
// credential does not verify); 2: the question could not be answered (bad flags, a missing or
// broken file); 70: a bug in synpass (the stack trace is printed for a report).
import { InvalidArgumentError } from 'commander';
import { SynpassError } from '../errors.ts';

export const EXIT_NO = 1;
export const EXIT_USAGE = 2;
export const EXIT_SOFTWARE = 70;

/** Input a person can correct: a typed synpass error, or a value refused by validation. */
function isUserError(error: unknown): error is Error {
  return error instanceof SynpassError || error instanceof RangeError || error instanceof InvalidArgumentError;
}

export function failWith(command: string, error: unknown): never {
  if (isUserError(error)) {
    process.stderr.write(`synpass ${command}: ${error.message}\n`);
    process.exit(EXIT_USAGE);
  }
  process.stderr.write(`synpass ${command}: unexpected error, please report it: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(EXIT_SOFTWARE);
}

/** Runs a command's action; whatever it throws ends the process through `failWith`. */
export function guarded<Args extends unknown[]>(command: string, action: (...args: Args) => Promise<void> | void): (...args: Args) => Promise<void> {
  return async (...args: Args) => {
    try {
      await action(...args);
    } catch (error) {
      failWith(command, error);
    }
  };
}
