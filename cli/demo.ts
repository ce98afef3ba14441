import { untilStopped } from '../common/cli.js';
import { Command } from 'commander';

/**
 * `flb demo` / `npm start`: the embedded default. For now it runs the real control plane the
 * tests use and keeps it up until Ctrl-C; later parts add the repo, injector and sidecars.
 */
export function demoCommand(): Command {
  return new Command('demo')
    .summary('run flb-mesh on an embedded control plane (no cluster needed)')
    .description('Starts etcd, kube-apiserver and kube-controller-manager on loopback and keeps them running until Ctrl-C.')
    .option('--kubeconfig-out <file>', 'also copy the admin kubeconfig here')
    .action(async (options: { kubeconfigOut?: string }) => {
      // Imported here so that other subcommands do not pay for loading the Kubernetes client.
      const { startControlPlane } = await import('../devenv/controlplane.js');
      const { createLogger } = await import('../common/log.js');
      const log = createLogger('demo');
      const started = Date.now();
      const plane = await startControlPlane({ onProgress: (message) => log.info(message) });
      log.info({ server: plane.server, dir: plane.dir, ms: Date.now() - started }, 'control plane ready');
      if (options.kubeconfigOut) {
        const { copyFileSync } = await import('node:fs');
        copyFileSync(plane.kubeconfigPath, options.kubeconfigOut);
      }
      const kubeconfig = options.kubeconfigOut ?? plane.kubeconfigPath;
      process.stdout.write(
        [
          `flb-mesh demo: a Kubernetes control plane is running at ${plane.server}`,
          '',
          'Point kubectl at it (kubectl is built with the test servers):',
          `  export KUBECONFIG=${kubeconfig}`,
          `  ${process.env.FLB_CACHE_DIR ?? '~/.cache/flb-mesh'}/bin/kubectl get namespaces`,
          '',
          'Pods are stored, not run (there is no kubelet). Press Ctrl-C to stop; everything is removed.',
          '',
        ].join('\n'),
      );
      await untilStopped();
      log.info('stopping');
      await plane.stop();
    });
}
