// `flb bridge`: parses, then hands over to bridge.ts (run) or status.ts (status).
import { Command } from 'commander';
import { parseHostPort } from '../common/duration.js';

export function bridgeCommands(): Command[] {
  const bridge = new Command('bridge')
    .summary('the control plane: Kubernetes (and registries, later) into the catalog and out to the repo')
    .description(
      'The registry bridge: sources (Kubernetes Services, EndpointSlices and injected pods) into one normalised catalog, out to sinks (the repo: /flb/mesh and one codebase per sidecar). One replica leads through a Lease.',
    );

  bridge
    .command('run')
    .description('Run the bridge until SIGTERM or Ctrl-C.')
    .requiredOption('--config <file>', 'BridgeConfig (YAML or JSON): sources, sinks, mesh settings, leader election')
    .option('--kubeconfig <file>', 'kubeconfig (default: $KUBECONFIG, ~/.kube/config, or in-cluster)')
    .option('--admin <host:port>', 'status (/status), health (/healthz, /readyz) and Prometheus (/metrics), plain HTTP', '127.0.0.1:15020')
    .option('--identity <name>', "this replica's name in the Lease (default: $POD_NAME, else the host name)")
    .action(async (o: { config: string; kubeconfig?: string; admin: string; identity?: string }) => {
      const admin = parseHostPort(o.admin, '--admin', '127.0.0.1:15020');
      const [{ loadBridgeConfig }, { loadKubeConfig }, { createLogger }, { untilStopped }, { startBridge }] = await Promise.all([
        import('./config.js'),
        import('../common/kube.js'),
        import('../common/log.js'),
        import('../common/cli.js'),
        import('./bridge.js'),
      ]);
      const config = loadBridgeConfig(o.config);
      const kubeConfig = loadKubeConfig(o.kubeconfig);
      const log = createLogger('bridge');
      const running = await startBridge({ config, kubeConfig, log, admin, ...(o.identity ? { identity: o.identity } : {}) });
      log.info({ admin: `http://${o.admin}/status` }, 'bridge running');
      await untilStopped();
      log.info('stopping');
      await running.stop();
    });

  bridge
    .command('status')
    .description("Print the bridge's sources and sinks as a table (from its --admin endpoint).")
    .option('--url <url>', "the bridge's admin endpoint", 'http://127.0.0.1:15020')
    .option('-o, --output <format>', 'table or json', 'table')
    .action(async (o: { url: string; output: string }) => {
      const { printBridgeStatus } = await import('./status.js');
      await printBridgeStatus(o.url, o.output === 'json' ? 'json' : 'table');
    });
  return [bridge];
}
