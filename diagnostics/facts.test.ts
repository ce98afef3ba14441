import { describe, expect, it } from '@jest/globals';
import type { CoreV1Event, V1Pod } from '@kubernetes/client-node';
import { ebpfUnavailableNodes } from './facts.js';

/** A Deployment's pod on `node` whose flb-validation failed, in the given interception mode, as the repair loop labelled it. */
const brokenPod = (name: string, node: string, mode: string): V1Pod => ({
  metadata: {
    name,
    namespace: 'shop',
    uid: `uid-${name}`,
    labels: { 'flomesh.io/cni-repair': 'broken' },
    annotations: { 'flomesh.io/interception': JSON.stringify({ version: 1, mode }) },
    ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'web-1', uid: 'rs', controller: true }],
  },
  spec: { nodeName: node, containers: [] },
  status: {
    initContainerStatuses: [{ name: 'flb-validation', ready: false, restartCount: 1, image: 'x', imageID: 'x', state: { terminated: { exitCode: 1 } } }],
  },
});

/**
 * The Event a node's agent records on a pod it labels, as cni/repair.ts words it (diagnostics may
 * import only common/, so the wording is copied: cni/repair.test.ts checks the agent's side).
 */
const repairEvent = (pod: V1Pod, node: string, ebpfUnavailable: string | undefined): CoreV1Event => {
  const broken = 'flb-validation exited with 1: traffic interception is not in place';
  const reason = ebpfUnavailable ? `${broken}; eBPF interception is not available on this node (${ebpfUnavailable})` : broken;
  return {
    metadata: { generateName: 'flb-cni-repair-' },
    involvedObject: { apiVersion: 'v1', kind: 'Pod', name: pod.metadata!.name!, namespace: pod.metadata!.namespace!, uid: pod.metadata!.uid! },
    type: 'Warning',
    reason: 'InterceptionMissing',
    message: `${reason}; labelled flomesh.io/cni-repair=broken: delete it to recreate it with the rules`,
    source: { component: 'flb-cni-agent', host: node },
  };
};
const repairEvents = (node: string, pods: V1Pod[], ebpfUnavailable: string | undefined) => pods.map((p) => repairEvent(p, node, ebpfUnavailable));

describe("flb check's eBPF facts", () => {
  it("groups broken eBPF pods by node with what the node's agent said is missing, from its repair Events", () => {
    const missing = 'missing bpftool, which loads the programs (apt-get install bpftool); a cgroup v2 path: /host/cgroup2 is on tmpfs filesystem, not cgroup2';
    const [a, b, c] = [brokenPod('a', 'n1', 'ebpf'), brokenPod('b', 'n1', 'ebpf'), brokenPod('c', 'n2', 'ebpf')];
    const cniPod = brokenPod('d', 'n2', 'cni');
    const events = [...repairEvents('n1', [a, b], missing), ...repairEvents('n2', [c, cniPod], 'missing Linux 5.7 or later (this is 5.4.0)')];
    expect(ebpfUnavailableNodes([a, b, c, cniPod], events)).toEqual([
      { node: 'n1', pods: ['shop/a', 'shop/b'], reason: missing },
      { node: 'n2', pods: ['shop/c'], reason: 'missing Linux 5.7 or later (this is 5.4.0)' },
    ]);
  });

  it("reads the verdict from flb-validation's termination message once the Events have expired", () => {
    const pod = brokenPod('a', 'n1', 'ebpf');
    // As the kubelet keeps it with FallbackToLogsOnError: the tail of the log, `flb: <error>` and the hint.
    pod.status!.initContainerStatuses![0]!.lastState = {
      terminated: {
        exitCode: 1,
        message:
          'flb: traffic interception is not in place in this pod: a connection to 240.240.255.254:15999 was not redirected to port 15001 (closed): eBPF interception is not available on node n1: missing bpftool, which loads the programs (apt-get install bpftool)\nhint: this node cannot run eBPF interception: set the mesh interception.mode to "cni"\n',
      },
    };
    expect(ebpfUnavailableNodes([pod], [])).toEqual([
      { node: 'n1', pods: ['shop/a'], reason: 'missing bpftool, which loads the programs (apt-get install bpftool)' },
    ]);
    // A validation that failed for another reason names no node.
    pod.status!.initContainerStatuses![0]!.lastState = { terminated: { exitCode: 1, message: 'flb: traffic interception is not in place in this pod: ...' } };
    expect(ebpfUnavailableNodes([pod], [])).toEqual([]);
  });

  it('leaves out a broken eBPF pod on a node that runs eBPF (its Event names no eBPF verdict), and Events of pods no longer broken', () => {
    const onWorkingNode = brokenPod('a', 'n1', 'ebpf');
    const events = [...repairEvents('n1', [onWorkingNode], undefined), ...repairEvents('n2', [brokenPod('gone', 'n2', 'ebpf')], 'missing bpftool')];
    expect(events).toHaveLength(2);
    expect(ebpfUnavailableNodes([onWorkingNode], events)).toEqual([]);
  });
});
