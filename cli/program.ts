import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { bpfCommands } from '../bpf/cli.js';
import { cniCommands } from '../cni/cli.js';
import { diagnosticsCommands } from '../diagnostics/cli.js';
import { injectorCommands } from '../injector/cli.js';
import { bridgeCommands } from '../registry-bridge/cli.js';
import { repoCommands } from '../repo/cli.js';
import { sidecarCommands } from '../sidecar/cli.js';
import { demoCommand } from './demo.js';

/** Every subcommand, in the order `flb --help` lists them. */
export const SUBCOMMANDS = [
  'inject',
  'webhook',
  'repo',
  'bridge',
  'sidecar',
  'iptables',
  'cni',
  'bpf',
  'bgp',
  'vm',
  'check',
  'proxy-status',
  'proxy-config',
  'validate',
  'demo',
  'completion',
] as const;

function packageVersion(): string {
  for (const candidate of ['../package.json', '../../package.json']) {
    try {
      return (JSON.parse(readFileSync(new URL(candidate, import.meta.url), 'utf8')) as { version: string }).version;
    } catch {
      // try the next: sources run from cli/, the build from dist/cli/
    }
  }
  return 'unknown';
}

export function buildProgram(): Command {
  const program = new Command('flb')
    .description('flb-mesh: a sidecar mesh with client-side load balancing, DNS and failover for Kubernetes and VMs')
    .version(packageVersion(), '-V, --version')
    .showHelpAfterError('(run with --help for usage)')
    .addHelpText(
      'after',
      [
        '',
        'Conventions: data goes to stdout, logs to stderr: readable lines on a terminal, JSON lines (pino) anywhere else.',
        'FLB_LOG_FORMAT=json|pretty chooses the format; FLB_LOG_LEVEL=fatal|error|warn|info|debug|trace|silent sets the level (info).',
        'Exit codes: 0 ok, 1 failure, 2 usage error (including a subcommand that is not built yet).',
      ].join('\n'),
    );
  const byName = new Map(
    [
      ...injectorCommands(),
      ...repoCommands(),
      ...bridgeCommands(),
      ...sidecarCommands(),
      ...cniCommands(),
      ...bpfCommands(),
      ...diagnosticsCommands(),
      demoCommand(),
    ].map((c) => [c.name(), c]),
  );
  for (const name of SUBCOMMANDS) {
    const command = byName.get(name);
    if (!command) throw new Error(`subcommand ${name} is not registered`);
    program.addCommand(command);
  }
  return program;
}
