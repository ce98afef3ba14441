import { isIP } from 'node:net';
import { Command } from 'commander';
import { untilStopped } from '../common/cli.js';
import { UsageError } from '../common/errors.js';
import { parseHostPort } from '../common/duration.js';
import type { WriteStep } from './store/disk.js';

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

export function repoCommands(): Command[] {
  return [
    new Command('repo')
      .summary('run the config center (a Pipy-Repo-compatible repo)')
      .description(
        'Serves the Pipy 1.5 repo REST API (repo/PIPY-API.md) from a durable local store: every accepted write is on disk before the answer. Authentication (TLS, ServiceAccount tokens, client certificates) is not built yet, so it listens on loopback only.',
      )
      .option('--listen <host:port>', 'address to listen on', '127.0.0.1:6060')
      .requiredOption('--data-dir <dir>', 'where codebases are kept')
      .action(async (o: { listen: string; dataDir: string }) => {
        const { host, port } = parseHostPort(o.listen, '--listen');
        if (!LOOPBACK.has(host) && !(isIP(host) === 4 && host.startsWith('127.'))) {
          throw new UsageError(`--listen ${o.listen}: only loopback addresses for now; the repo has no authentication yet (issue #5), so it must not be reachable from the network`);
        }
        const [{ DiskStore }, { Repo }, { startRepoServer }, { createLogger }] = await Promise.all([
          import('./store/disk.js'),
          import('./repo.js'),
          import('./server.js'),
          import('../common/log.js'),
        ]);
        const log = createLogger('repo');
        // Tests only: FLB_REPO_CRASH_AFTER=<step>[:<nth write>] kills the process inside the write path.
        const [crashAfter, occurrence] = (process.env.FLB_REPO_CRASH_AFTER ?? '').split(':');
        const store = await new DiskStore(o.dataDir, crashAfter ? { crashAfter: crashAfter as WriteStep, occurrence: Number(occurrence ?? 1) } : undefined).init();
        const repo = await new Repo(store).load();
        const server = await startRepoServer({ repo, host, port, log });
        log.info({ host, port: server.port, dataDir: o.dataDir, codebases: repo.list().length }, 'repo serving; anonymous access, bound to loopback');
        process.stdout.write(`${server.port}\n`);
        await untilStopped();
        await server.close();
      }),
  ];
}
