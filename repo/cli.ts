import { Command } from 'commander';
import { notBuiltYet } from '../common/cli.js';

export function repoCommands(): Command[] {
  return [
    notBuiltYet(
      new Command('repo')
        .summary('run the config center (a Pipy-Repo-compatible repo)')
        .description('Serves the Pipy 1.5 repo REST API from a durable store.')
        .option('--listen <host:port>', 'address to listen on', '127.0.0.1:6060')
        .option('--data-dir <dir>', 'where published codebases are kept'),
      'issue #5, the config center',
    ),
  ];
}
