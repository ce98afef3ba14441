/**
 * What `flb sidecar` needs at run time, in one module: the build bundles it (with its
 * dependencies) into dist/sidecar.bundle.mjs, because a sidecar runs next to every app and a
 * bundle costs about 14 MiB less memory than loading the same code as ~250 separate ES modules
 * (each keeps its own module record and source). See scripts/bundle.mjs.
 */
import { Command } from 'commander';
import { runCli } from '../common/cli.js';
import { sidecarCodebase, sidecarIdFromEnv } from '../common/contract/identity.js';
import { parseDuration } from '../common/duration.js';
import { createLogger } from '../common/log.js';
import { sidecarCommands } from './cli.js';
import { runSidecar } from './sidecar.js';

export { createLogger, parseDuration, runSidecar, sidecarCodebase, sidecarIdFromEnv };

/**
 * `flb sidecar ...` straight from bin/flb.js, without loading the rest of the CLI: the whole
 * program (commander as a CommonJS module, every subcommand's module) costs ~8 MiB more per sidecar.
 */
export function runSidecarCommand(argv: string[]): Promise<number> {
  const program = new Command('flb').showHelpAfterError('(run with --help for usage)');
  const self = { createLogger, parseDuration, runSidecar, sidecarCodebase, sidecarIdFromEnv, runSidecarCommand };
  for (const command of sidecarCommands(() => Promise.resolve(self))) program.addCommand(command);
  return runCli(program, argv);
}
