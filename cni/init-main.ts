/*
 * The init container's bundle entry (scripts/bundle.mjs bundles this file and what it imports into
 * dist/iptables.bundle.mjs): every injected pod in iptables mode runs `flb iptables apply` once,
 * on the cores its sidecar and app are about to start on, and loading the full CLI's ~200
 * modules costs more CPU than applying the rules. bin/flb.js runs `flb iptables ...` from the
 * bundle; the parser is the same one (cli.ts), so flags, help and errors are the full CLI's.
 */
// First: before any schema is built (see there).
import '../common/contract/zod-jitless.js';
import { Command } from 'commander';
import { runCli } from '../common/cli.js';
import { iptablesCommand } from './cli.js';

/** `flb iptables ...` with everything it runs in this bundle. */
export function runIptablesCommand(argv: string[]): Promise<number> {
  const program = new Command('flb').showHelpAfterError('(run with --help for usage)');
  program.addCommand(iptablesCommand());
  return runCli(program, argv);
}
