/** Exit codes every `flb` subcommand uses. */
export const ExitCode = {
  ok: 0,
  failure: 1,
  usage: 2,
} as const;

/** A mistake in how the command was called: exit code 2, with a hint of what to do instead. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** Something the user can act on; `hint` says what to do next. */
export class ActionableError extends Error {
  override readonly name = 'ActionableError';
  constructor(
    message: string,
    readonly hint?: string,
  ) {
    super(message);
  }
}
