/*
 * The conventions every `flb` command shares: exit codes, how errors reach the user, subcommands
 * that are not built yet, and waiting for Ctrl-C / SIGTERM.
 */
import { CommanderError, InvalidArgumentError, type Command } from 'commander';
import { parseDuration } from './duration.js';
import { ActionableError, ExitCode, UsageError } from './errors.js';
import { ContractError } from './contract/validate.js';
import { checkLogEnvironment, type Logger } from './log.js';

/** A commander option parser for a port number, with commander's usage error for anything else. */
export function portArgument(value: string): number {
  const number = Number(value);
  if (!/^\d+$/.test(value) || number > 65535) throw new InvalidArgumentError('not a port number (0-65535; 0: any free port)');
  return number;
}

/** A commander option parser for a duration (`500ms`, `2s`, `1m`), in milliseconds. */
export function durationArgument(value: string): number {
  try {
    return parseDuration(value);
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
}

/**
 * A subcommand whose capability has not landed yet: its --help and the `flb --help` list say so,
 * and running it says where the work is tracked and exits with the usage code, so scripts can
 * tell it from a failure.
 */
export function notBuiltYet(command: Command, tracking: string): Command {
  return command
    .summary(`(not built yet) ${command.summary()}`)
    .description(
      `Not built yet: ${tracking}. Running it only says so and exits 2.

${command.description()}`,
    )
    .allowUnknownOption()
    .allowExcessArguments()
    .action(() => {
      throw new UsageError(`'flb ${command.name()}' is not built yet (${tracking})`);
    });
}

/**
 * Runs a commander program with the conventions every `flb` command shares: exit 0 on success
 * and for --help/--version, 2 for usage errors (commander would use 1), 1 for failures; errors go
 * to stderr as one readable line plus a hint, and as a structured log line when a logger is given.
 */
export async function runCli(program: Command, argv: string[], logger?: Logger): Promise<number> {
  program.exitOverride();
  for (const command of allCommands(program)) {
    command.exitOverride();
    command.configureOutput({ outputError: (text, write) => write(text) });
  }
  try {
    checkLogEnvironment();
    await program.parseAsync(argv);
    return ExitCode.ok;
  } catch (error) {
    return reportError(error, logger);
  }
}

function allCommands(command: Command): Command[] {
  return [command, ...command.commands.flatMap(allCommands)];
}

export function reportError(error: unknown, logger?: Logger): number {
  if (error instanceof CommanderError) {
    if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version' || error.code === 'commander.help') {
      return ExitCode.ok;
    }
    // commander has already printed its message.
    return ExitCode.usage;
  }
  if (error instanceof UsageError) {
    process.stderr.write(`flb: ${error.message}\n`);
    return ExitCode.usage;
  }
  if (error instanceof ActionableError) {
    process.stderr.write(`flb: ${error.message}\n${error.hint ? `hint: ${error.hint}\n` : ''}`);
    logger?.error({ err: error }, error.message);
    return ExitCode.failure;
  }
  if (error instanceof ContractError) {
    process.stderr.write(`flb: ${error.message}\n`);
    return ExitCode.failure;
  }
  const message = error instanceof Error ? error.message : String(error);
  process.stderr.write(`flb: ${message}\n`);
  logger?.error({ err: error }, message);
  return ExitCode.failure;
}

/** Resolves on SIGINT or SIGTERM: long-running subcommands wait on it, then shut down gracefully. */
export function untilStopped(): Promise<void> {
  return new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
}
