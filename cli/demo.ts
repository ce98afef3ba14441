// `flb demo` / `npm start`: parses, then runs devenv/demo.ts until Ctrl-C.
import { untilStopped } from '../common/cli.js';
import { Command } from 'commander';

export function demoCommand(): Command {
  return new Command('demo')
    .summary('run the mesh at work on an embedded Kubernetes (no cluster needed)')
    .description(
      'Starts a real Kubernetes control plane, a pod network and a node simulator that runs pods, then the mesh (repo, registry bridge, injector). A labelled namespace gets a client and a three-replica echo server, injected and run for real; the client calls the server by name through its sidecar, the demo shows how calls spread, deletes one server pod and shows the calls move with none failing. Ctrl-C stops it and removes everything. Needs root (network namespaces).',
    )
    .option('--kubeconfig-out <file>', 'also copy the admin kubeconfig here (for kubectl)')
    .option('--log-file <file>', 'keep the logs of the demo and the node simulator in this file')
    .option('--delete-pod-after <duration>', 'when to delete one echo pod', '15s')
    .action(async (options: { kubeconfigOut?: string; logFile?: string; deletePodAfter: string }) => {
      const [{ Demo }, { parseDuration }] = await Promise.all([import('../devenv/demo.js'), import('../common/duration.js')]);
      const demo = new Demo({
        out: process.stdout,
        progress: (line) => process.stderr.write(`${line}\n`),
        interactive: Boolean(process.stdout.isTTY),
        deletePodAfterMs: parseDuration(options.deletePodAfter),
        ...(options.kubeconfigOut ? { kubeconfigOut: options.kubeconfigOut } : {}),
        ...(options.logFile ? { logFile: options.logFile } : {}),
      });
      const stopped = untilStopped();
      try {
        await Promise.race([demo.start(), stopped]);
        await stopped;
      } finally {
        await demo.stop();
      }
    });
}
