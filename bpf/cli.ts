import { Command } from 'commander';
import { notBuiltYet } from '../common/cli.js';

export function bpfCommands(): Command[] {
  return [
    notBuiltYet(
      new Command('bpf')
        .summary('load, inspect or unload the eBPF interception programs')
        .description('connect4/6 redirect, sockops + getsockopt original destination, sendmsg4 for DNS.'),
      'eBPF interception, issue #20',
    ),
  ];
}
