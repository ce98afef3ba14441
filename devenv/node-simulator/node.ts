// The Node object a kubelet registers and keeps alive: zone and region topology labels (the
// EndpointSlice controller copies the zone into each endpoint), NodeReady, and the Lease in
// kube-node-lease renewed every 10 s. Without the renewals the node-lifecycle controller marks the
// node's pods NotReady after about 40 s and their endpoints leave the EndpointSlices.
import { CoordinationV1Api, CoreV1Api, V1MicroTime, type KubeConfig, type V1Node, type V1NodeCondition } from '@kubernetes/client-node';
import type { Logger } from '../../common/log.js';
import { VERSION } from './images.js';

export interface SimulatedNodeOptions {
  name: string;
  zone: string;
  region: string;
  /** The node's InternalIP (the host as pods see it). */
  address: string;
  allocatable: { cpu: string; memory: string; pods: string };
  kubeletVersion: string;
  leaseRenewMs?: number;
  statusUpdateMs?: number;
}

const LEASE_SECONDS = 40;

function readyConditions(now: Date, since: Date): V1NodeCondition[] {
  const healthy = (type: string, reason: string, message: string): V1NodeCondition => ({
    type,
    status: 'False',
    reason,
    message,
    lastHeartbeatTime: now,
    lastTransitionTime: since,
  });
  return [
    healthy('MemoryPressure', 'KubeletHasSufficientMemory', 'kubelet has sufficient memory available'),
    healthy('DiskPressure', 'KubeletHasNoDiskPressure', 'kubelet has no disk pressure'),
    healthy('PIDPressure', 'KubeletHasSufficientPID', 'kubelet has sufficient PID available'),
    {
      type: 'Ready',
      status: 'True',
      reason: 'KubeletReady',
      message: 'flb-mesh node simulator is posting ready status',
      lastHeartbeatTime: now,
      lastTransitionTime: since,
    },
  ];
}

export class SimulatedNode {
  private readonly core: CoreV1Api;
  private readonly coordination: CoordinationV1Api;
  private leaseTimer?: NodeJS.Timeout;
  private statusTimer?: NodeJS.Timeout;
  private readonly since = new Date();

  constructor(
    kubeConfig: KubeConfig,
    readonly options: SimulatedNodeOptions,
    private readonly log: Logger,
  ) {
    this.core = kubeConfig.makeApiClient(CoreV1Api);
    this.coordination = kubeConfig.makeApiClient(CoordinationV1Api);
  }

  get name(): string {
    return this.options.name;
  }

  get labels(): Record<string, string> {
    return {
      'kubernetes.io/hostname': this.options.name,
      'kubernetes.io/os': 'linux',
      'kubernetes.io/arch': 'amd64',
      'topology.kubernetes.io/zone': this.options.zone,
      'topology.kubernetes.io/region': this.options.region,
      'flomesh.io/node-simulator': 'true',
    };
  }

  async register(): Promise<void> {
    const { name, address, allocatable } = this.options;
    const node: V1Node = {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name, labels: this.labels },
      spec: {},
    };
    try {
      await this.core.createNode({ body: node });
    } catch (error) {
      if ((error as { code?: number }).code !== 409) throw error;
      const existing = await this.core.readNode({ name });
      await this.core.replaceNode({
        name,
        body: { ...existing, metadata: { ...existing.metadata, labels: { ...existing.metadata?.labels, ...this.labels } } },
      });
    }
    // kube-controller-manager's node controllers write the new Node too (taints, CIDRs): a status
    // replaced from a read that they overtook is a 409 Conflict, and is read and tried again.
    for (let attempt = 1; ; attempt++) {
      try {
        const now = new Date();
        await this.core.replaceNodeStatus({
          name,
          body: {
            ...(await this.core.readNode({ name })),
            status: {
              addresses: [
                { type: 'InternalIP', address },
                { type: 'Hostname', address: name },
              ],
              capacity: allocatable,
              allocatable,
              conditions: readyConditions(now, this.since),
              daemonEndpoints: { kubeletEndpoint: { Port: 10250 } },
              nodeInfo: {
                architecture: 'amd64',
                bootID: '',
                containerRuntimeVersion: `flb-devenv://${VERSION}`,
                kernelVersion: '',
                kubeProxyVersion: '',
                kubeletVersion: this.options.kubeletVersion,
                machineID: '',
                operatingSystem: 'linux',
                osImage: 'flb-mesh node simulator',
                systemUUID: '',
              },
            },
          },
        });
        break;
      } catch (error) {
        if ((error as { code?: number }).code !== 409 || attempt >= 10) throw error;
      }
    }
    await this.renewLease();
    this.leaseTimer = setInterval(() => void this.renewLease(), this.options.leaseRenewMs ?? 10_000);
    this.statusTimer = setInterval(() => void this.heartbeat(), this.options.statusUpdateMs ?? 30_000);
    this.log.info({ node: name, zone: this.options.zone }, 'node registered');
  }

  private async renewLease(): Promise<void> {
    const name = this.options.name;
    const spec = { holderIdentity: name, leaseDurationSeconds: LEASE_SECONDS, renewTime: new V1MicroTime() };
    try {
      const lease = await this.coordination.readNamespacedLease({ name, namespace: 'kube-node-lease' }).catch((error: unknown) => {
        if ((error as { code?: number }).code === 404) return undefined;
        throw error;
      });
      if (!lease) {
        const node = await this.core.readNode({ name });
        await this.coordination.createNamespacedLease({
          namespace: 'kube-node-lease',
          body: { metadata: { name, ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name, uid: node.metadata!.uid! }] }, spec },
        });
      } else {
        await this.coordination.replaceNamespacedLease({ name, namespace: 'kube-node-lease', body: { ...lease, spec: { ...lease.spec, ...spec } } });
      }
    } catch (error) {
      this.log.warn({ err: error, node: name }, 'renewing the node lease failed');
    }
  }

  private async heartbeat(): Promise<void> {
    try {
      const node = await this.core.readNode({ name: this.options.name });
      node.status = { ...node.status, conditions: readyConditions(new Date(), this.since) };
      await this.core.replaceNodeStatus({ name: this.options.name, body: node });
    } catch (error) {
      this.log.warn({ err: error, node: this.options.name }, 'updating the node status failed');
    }
  }

  /** Stops the heartbeats; `remove` also deletes the Node (and its Lease goes with it). */
  async stop(remove: boolean): Promise<void> {
    clearInterval(this.leaseTimer);
    clearInterval(this.statusTimer);
    if (!remove) return;
    await this.core.deleteNode({ name: this.options.name }).catch(() => undefined);
  }
}
