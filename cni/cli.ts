import { Command } from 'commander';
import { notBuiltYet } from '../common/cli.js';

export function cniCommands(): Command[] {
  return [
    notBuiltYet(
      new Command('iptables')
        .summary('apply, clean, print or verify the traffic interception rules')
        .description('The one iptables rule builder, for the init container and VMs.'),
      'issue #4, traffic interception',
    ),
    notBuiltYet(
      new Command('cni')
        .summary('run the CNI node agent, or install/uninstall the CNI plugin')
        .description('Programs pod network namespaces on behalf of the chained CNI plugin.'),
      'issue #4, traffic interception',
    ),
  ];
}
