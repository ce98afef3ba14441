// `flb bgp --config FILE` and `flb bgp status`: the flags, parsed, then runner.ts or status.ts
// (loaded only when run: every `flb` command loads this file).
import { Command } from 'commander';
import { parseHostPort } from '../../common/duration.js';

const DEFAULT_ADMIN = '127.0.0.1:15179';

export function bgpCommand(): Command {
  const bgp = new Command('bgp')
    .summary('announce VIPs of healthy local processes over BGP')
    .description(
      'The sidecar-mode BGP announcer, on its own (hosts without a sidecar). Each VIP is announced to every peer while its local check (TCP connect or HTTP GET) passes and withdrawn when it fails; the sessions stay up. SIGTERM drains: VIPs announced with GRACEFUL_SHUTDOWN (65535:0) for drainSeconds, then withdrawn, then the sessions closed. The VIP itself must be on the host (e.g. on lo) for traffic to reach the process.',
    )
    .option('--config <file>', "the BGP section of sidecar.json as YAML or JSON: localAs, routerId, peers, vips (see common/contract's BgpSchema)")
    .option('--admin <host:port>', 'status endpoint (GET /status), plain HTTP', DEFAULT_ADMIN)
    .action(async (o: { config?: string; admin: string }) => {
      if (!o.config) {
        const { UsageError } = await import('../../common/errors.js');
        throw new UsageError("flb bgp needs --config FILE (or 'flb bgp status')");
      }
      const admin = parseHostPort(o.admin, '--admin', DEFAULT_ADMIN);
      const [{ loadBgpConfig, startBgp }, { createLogger }, { untilStopped }] = await Promise.all([
        import('./runner.js'),
        import('../../common/log.js'),
        import('../../common/cli.js'),
      ]);
      const config = await loadBgpConfig(o.config);
      const log = createLogger('bgp');
      const running = await startBgp(config, admin, log, { vipsOnLoopback: true });
      await untilStopped();
      log.info('draining');
      await running.stop();
    });

  bgp
    .command('status')
    .description('Print the peers (state, uptime, prefixes sent and received) and each VIP with its health, from a running announcer.')
    .option('--url <url>', "a standalone announcer's admin endpoint (flb bgp --admin)", `http://${DEFAULT_ADMIN}`)
    .option('--admin <url>', "a sidecar's admin port instead (its announcer's status is at /bgp), e.g. http://127.0.0.1:15000")
    .option('-o, --output <format>', 'table or json', 'table')
    .action(async (o: { url: string; admin?: string; output: string }) => {
      // `bgp` has an --admin of its own (the standalone's listen address), which commander gives
      // the parent when it follows `status`: taken from there when the user typed it.
      const admin = o.admin ?? (bgp.getOptionValueSource('admin') === 'cli' ? (bgp.opts() as { admin: string }).admin : undefined);
      const { printBgpStatus } = await import('./status.js');
      await printBgpStatus(
        admin ? { url: /^https?:\/\//.test(admin) ? admin : `http://${admin}`, path: '/bgp' } : { url: o.url, path: '/status' },
        o.output === 'json' ? 'json' : 'table',
      );
    });
  return bgp;
}
