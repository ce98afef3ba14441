import { Command } from 'commander';
import { notBuiltYet } from '../common/cli.js';

export function injectorCommands(): Command[] {
  return [
    notBuiltYet(
      new Command('inject')
        .summary('add sidecars to Kubernetes manifests offline (for GitOps)')
        .description('Injects sidecars into Pods and workloads in YAML manifests and prints the result.')
        .option('-f, --filename <file>', 'manifest file, or - for standard input', '-')
        .option('--explain', 'print why each workload would or would not be injected'),
      'issue #3, the sidecar injector',
    ),
    notBuiltYet(
      new Command('webhook')
        .summary('run the mutating admission webhook, or install its configuration')
        .description('Serves AdmissionReviews over HTTPS, keeps its certificates and caBundle current.'),
      'issue #3, the sidecar injector',
    ),
    notBuiltYet(
      new Command('vm')
        .summary('install, check or remove the sidecar on a plain VM')
        .description('Installs the same sidecar on a VM, with iptables or eBPF interception, registered with the repo.'),
      'the VM installer, a later issue',
    ),
  ];
}
