import { Command } from 'commander';
import { notBuiltYet } from '../common/cli.js';

export function sidecarCommands(): Command[] {
  return [
    notBuiltYet(
      new Command('sidecar')
        .summary('run the sidecar: outbound/inbound proxy, client-side load balancing, DNS')
        .description('The data plane process, configured from the repo or a local file.'),
      'issue #6, the sidecar data plane',
    ),
    notBuiltYet(
      new Command('bgp')
        .summary('announce VIPs of healthy local processes over BGP')
        .description('The sidecar-mode BGP announcer, usable on its own.'),
      'the BGP announcer, a later issue',
    ),
  ];
}
