/*
 * The sidecar bundle's entry (scripts/bundle.mjs bundles this file and everything it imports into
 * dist/sidecar.bundle.mjs): a sidecar runs next to every app, and one bundled module costs about
 * 14 MiB less memory than the same code as ~250 separate ES modules (each keeps its module record
 * and source). bin/flb.js runs `flb sidecar ...` straight from it through runSidecarCommand,
 * without loading the rest of the CLI (commander as a CommonJS module and every other
 * subcommand's modules cost ~8 MiB more per sidecar); the full CLI's cli.ts loads the runner from
 * it too. Either way there is one parser (cli.ts), one runner (runner.ts), one sidecar (sidecar.ts).
 */
// First: before any schema is built (see there).
import '../common/contract/zod-jitless.js';
import { Command } from 'commander';
import { runCli } from '../common/cli.js';
import { sidecarCommands } from './cli.js';
import { runSidecarProcess, waitForReady } from './runner.js';

export { runSidecarProcess, waitForReady };

/** `flb sidecar ...` with the runner in this bundle. */
export function runSidecarCommand(argv: string[]): Promise<number> {
  const program = new Command('flb').showHelpAfterError('(run with --help for usage)');
  const runner = { runSidecarProcess, waitForReady };
  for (const command of sidecarCommands(() => Promise.resolve(runner))) program.addCommand(command);
  return runCli(program, argv);
}
