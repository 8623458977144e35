// Command-line parsing shared by the subcommands: node's util.parseArgs in
// strict mode, with every failure turned into a UsageError (exit code 2).
import { parseArgs, type ParseArgsConfig } from 'node:util';

/** Exit code for bad usage or invalid configuration. */
export const EXIT_USAGE = 2;

/** A mistake on the command line; the message says what to change. */
export class UsageError extends Error {
  override name = 'UsageError';
}

type Options = NonNullable<ParseArgsConfig['options']>;

/** Parses `argv` against `options` (no positionals). Throws UsageError. */
export function parseFlags<T extends Options>(command: string, argv: string[], options: T): ReturnType<typeof parseArgs<{ args: string[]; options: T; strict: true; allowPositionals: false }>>['values'] {
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals: false }).values;
  } catch (error) {
    const message = (error as Error).message.replace(/\. To specify a positional argument.*$/s, '');
    throw new UsageError(`vhba ${command}: ${message}`);
  }
}

/** The value of a required string flag, or a UsageError naming it. */
export function required(command: string, name: string, value: string | undefined): string {
  if (value === undefined || value === '') throw new UsageError(`vhba ${command}: missing required flag --${name}`);
  return value;
}

/** A flag value that must be one of `allowed`. */
export function oneOf<T extends string>(command: string, name: string, value: string, allowed: readonly T[]): T {
  if (!allowed.includes(value as T)) {
    throw new UsageError(`vhba ${command}: --${name} ${JSON.stringify(value)} is not allowed; allowed: ${allowed.join(', ')}`);
  }
  return value as T;
}
