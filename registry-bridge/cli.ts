import { Command } from 'commander';
import { notBuiltYet } from '../common/cli.js';

export function bridgeCommands(): Command[] {
  return [
    notBuiltYet(
      new Command('bridge')
        .summary('sync Eureka, Consul, Kubernetes and other clusters into the catalog')
        .description('Runs the registry bridge: sources to one normalised catalog to sinks (repo, Kubernetes, Consul, Eureka).'),
      'the control plane and registry bridge, issues #14, #17 and #18',
    ),
  ];
}
