// The node simulator: plays the kubelet's part (and the scheduler's, which this environment does
// not run) for one or more simulated nodes sharing one pod network. It registers the nodes, binds
// pending pods to them, and runs each bound pod with a PodWorker. In-cluster clients reach the
// apiserver through a relay on the pod network's gateway (the apiserver listens on loopback).
import { createServer, connect, type Server, type Socket } from 'node:net';
import { CoreV1Api, ListWatch, Watch, type KubeConfig, type V1Pod } from '@kubernetes/client-node';
import type { Logger } from '../../common/log.js';
import { KeepAliveKubeConfig } from '../keep-alive-kubeconfig.js';
import type { PodNetwork } from '../pod-network.js';
import { NodeCgroups } from './cgroups.js';
import { ClusterDns } from './cluster-dns.js';
import { ServiceProxy } from './service-proxy.js';
import { SimulatedNode } from './node.js';
import { PodWorker, type PodWorkerContext } from './pod-worker.js';

export interface NodeSpec {
  name: string;
  zone: string;
  region?: string;
}

export interface NodeSimulatorOptions {
  kubeConfig: KubeConfig;
  network: PodNetwork;
  /** The apiserver as the host reaches it; pods get a relay to it on the gateway. */
  apiserver: { host: string; port: number };
  nodes?: NodeSpec[];
  dir: string;
  log: Logger;
  kubeletVersion?: string;
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  clusterDns?: { nameserver: string; domain: string };
  leaseRenewMs?: number;
  /** Translate ClusterIPs on the host as kube-proxy would (service-proxy.ts); off unless asked. */
  serviceProxy?: boolean;
}

export const DEFAULT_NODES: NodeSpec[] = [{ name: 'flb-node-a', zone: 'zone-a', region: 'region-1' }];
const ALLOCATABLE = { cpu: '2', memory: '8Gi', pods: '110' };

export class NodeSimulator {
  /** API calls over kept-alive connections: a pod start makes a few dozen. */
  private readonly kubeConfig: KeepAliveKubeConfig;
  private readonly core: CoreV1Api;
  private readonly nodes: SimulatedNode[];
  private readonly workers = new Map<string, PodWorker>();
  private informer?: ListWatch<V1Pod>;
  private relay?: Server;
  private readonly relayed = new Set<Socket>();
  private relayPort = 0;
  private dns?: ClusterDns;
  private serviceProxy?: ServiceProxy;
  private dnsServing = false;
  private cgroups?: NodeCgroups;
  private nextNode = 0;
  private readonly binding = new Set<string>();
  private stopped = false;

  private constructor(private readonly options: NodeSimulatorOptions) {
    this.kubeConfig = KeepAliveKubeConfig.from(options.kubeConfig);
    this.core = this.kubeConfig.makeApiClient(CoreV1Api);
    this.nodes = (options.nodes ?? DEFAULT_NODES).map(
      (spec) =>
        new SimulatedNode(
          this.kubeConfig,
          {
            name: spec.name,
            zone: spec.zone,
            region: spec.region ?? 'region-1',
            address: options.network.gateway,
            allocatable: ALLOCATABLE,
            kubeletVersion: options.kubeletVersion ?? 'v1.36.3',
            ...(options.leaseRenewMs ? { leaseRenewMs: options.leaseRenewMs } : {}),
          },
          options.log,
        ),
    );
  }

  static async start(options: NodeSimulatorOptions): Promise<NodeSimulator> {
    const simulator = new NodeSimulator(options);
    try {
      simulator.cgroups = await NodeCgroups.create(simulator.nodeNames, options.log);
      await simulator.startRelay();
      simulator.dns = new ClusterDns({
        kubeConfig: options.kubeConfig,
        host: options.network.gateway,
        domain: options.clusterDns?.domain ?? 'cluster.local',
        log: options.log,
      });
      simulator.dnsServing = await simulator.dns.start();
      if (options.serviceProxy) {
        simulator.serviceProxy = new ServiceProxy({ kubeConfig: options.kubeConfig, bridge: options.network.bridge, log: options.log });
        await simulator.serviceProxy.start();
      }
      for (const node of simulator.nodes) await node.register();
      simulator.watchPods();
    } catch (error) {
      await simulator.stop();
      throw error;
    }
    return simulator;
  }

  /** Where pods reach the apiserver: KUBERNETES_SERVICE_HOST and _PORT. */
  get apiserverForPods(): { host: string; port: number } {
    return { host: this.options.network.gateway, port: this.relayPort };
  }

  get nodeNames(): string[] {
    return this.nodes.map((n) => n.name);
  }

  /**
   * The node's cgroup v2 folder, which every container of its pods is in (under kubepods/pod<uid>):
   * where its node agent attaches the eBPF programs (`flb cni agent --bpf-cgroup`). Undefined
   * where the machine has no cgroup v2, or the node is not simulated here.
   */
  cgroupOf(node: string): string | undefined {
    return this.cgroups && this.nodeNames.includes(node) ? this.cgroups.nodeCgroup(node) : undefined;
  }

  /** The log of one container of a pod running here. */
  logFile(pod: V1Pod | { uid: string }, container: string): string | undefined {
    const uid = 'uid' in pod ? pod.uid : pod.metadata?.uid;
    return uid ? this.workers.get(uid)?.logFile(container) : undefined;
  }

  /** The process id of one container of a pod running here, while it runs. */
  containerPid(pod: V1Pod | { uid: string }, container: string): number | undefined {
    const uid = 'uid' in pod ? pod.uid : pod.metadata?.uid;
    return uid ? this.workers.get(uid)?.containerPid(container) : undefined;
  }

  /** `kubectl exec POD -c CONTAINER -- COMMAND`: runs in the container's namespaces as its user. */
  exec(
    namespace: string,
    pod: string,
    container: string,
    command: string[],
    timeoutMs?: number,
  ): Promise<{ exitCode: number; stdout: string; stderr: string }> {
    const worker = [...this.workers.values()].find((w) => w.name === `${namespace}/${pod}`);
    if (!worker) return Promise.reject(new Error(`pod ${namespace}/${pod} does not run on this node simulator`));
    return worker.run(container, command, timeoutMs);
  }

  /** The network namespace a pod runs in (for `ip netns exec`), undefined if it does not run here. */
  netnsOf(namespace: string, pod: string): string | undefined {
    return [...this.workers.values()].find((w) => w.name === `${namespace}/${pod}`)?.netns;
  }

  private async startRelay(): Promise<void> {
    // TLS passes through untouched: the apiserver's certificate names the gateway address.
    this.relay = createServer((client) => {
      const upstream = connect(this.options.apiserver.port, this.options.apiserver.host);
      this.relayed.add(client).add(upstream);
      const drop = () => {
        client.destroy();
        upstream.destroy();
        this.relayed.delete(client);
        this.relayed.delete(upstream);
      };
      client.on('error', drop).on('close', drop);
      upstream.on('error', drop).on('close', drop);
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve, reject) => {
      this.relay!.once('error', reject);
      this.relay!.listen(0, this.options.network.gateway, () => resolve());
    });
    this.relayPort = (this.relay.address() as { port: number }).port;
  }

  private context(node: SimulatedNode): PodWorkerContext {
    return {
      core: this.core,
      network: this.options.network,
      nodeName: node.name,
      nodeIp: this.options.network.gateway,
      allocatable: ALLOCATABLE,
      apiserver: this.apiserverForPods,
      // The stand-in on the gateway when it could bind port 53 there; else kube-dns's usual address, which nothing answers.
      clusterDns: this.options.clusterDns ?? { nameserver: this.dnsServing ? this.options.network.gateway : '10.96.0.10', domain: 'cluster.local' },
      backoffBaseMs: this.options.backoffBaseMs ?? 10_000,
      backoffMaxMs: this.options.backoffMaxMs ?? 300_000,
      log: this.options.log,
      dir: this.options.dir,
      ...(this.cgroups ? { cgroups: this.cgroups } : {}),
    };
  }

  private watchPods(): void {
    const informer = new ListWatch<V1Pod>('/api/v1/pods', new Watch(this.options.kubeConfig), () => this.core.listPodForAllNamespaces(), false);
    informer.on('add', (pod) => this.onPod(pod));
    informer.on('update', (pod) => this.onPod(pod));
    informer.on('delete', (pod) => this.onPodGone(pod));
    informer.on('error', (error: unknown) => {
      if (this.stopped) return;
      this.options.log.warn({ err: error }, 'the pod watch failed; listing again');
      setTimeout(() => void informer.start().catch(() => undefined), 1_000);
    });
    this.informer = informer;
    void informer.start().catch((error: unknown) => this.options.log.error({ err: error }, 'the pod watch could not start'));
  }

  private onPod(pod: V1Pod): void {
    if (this.stopped) return;
    const uid = pod.metadata?.uid;
    if (!uid) return;
    const nodeName = pod.spec?.nodeName;
    if (!nodeName) {
      void this.schedule(pod);
      return;
    }
    const node = this.nodes.find((n) => n.name === nodeName);
    if (!node) return;
    const existing = this.workers.get(uid);
    if (existing) {
      existing.update(pod);
      return;
    }
    if (pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed') return;
    if (pod.metadata?.deletionTimestamp) {
      // Deleted before it ever ran here: nothing to stop, only the final delete.
      void this.core
        .deleteNamespacedPod({ name: pod.metadata.name!, namespace: pod.metadata.namespace!, gracePeriodSeconds: 0, body: { preconditions: { uid } } })
        .catch(() => undefined);
      return;
    }
    const worker = new PodWorker(pod, this.context(node));
    this.workers.set(uid, worker);
    worker.start();
    void worker.done;
  }

  private onPodGone(pod: V1Pod): void {
    const uid = pod.metadata?.uid;
    const worker = uid ? this.workers.get(uid) : undefined;
    if (!worker) return;
    this.workers.delete(uid!);
    void worker.kill();
  }

  /** The scheduler's job, simply: a node whose labels match the pod's nodeSelector, in turn. */
  private async schedule(pod: V1Pod): Promise<void> {
    const uid = pod.metadata!.uid!;
    if (this.binding.has(uid) || pod.metadata?.deletionTimestamp) return;
    if (pod.spec?.schedulerName && pod.spec.schedulerName !== 'default-scheduler') return;
    if (pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed') return;
    const selector = pod.spec?.nodeSelector ?? {};
    const fits = this.nodes.filter((n) => Object.entries(selector).every(([k, v]) => n.labels[k] === v));
    if (fits.length === 0) {
      this.options.log.warn(
        { pod: `${pod.metadata?.namespace}/${pod.metadata?.name}`, nodeSelector: selector },
        'no simulated node matches the pod; it stays pending',
      );
      return;
    }
    const node = fits[this.nextNode++ % fits.length]!;
    this.binding.add(uid);
    try {
      await this.core.createNamespacedPodBinding({
        name: pod.metadata!.name!,
        namespace: pod.metadata!.namespace!,
        body: { metadata: { name: pod.metadata!.name!, uid }, target: { apiVersion: 'v1', kind: 'Node', name: node.name } },
      });
    } catch (error) {
      const code = (error as { code?: number }).code;
      if (code !== 409 && code !== 404) this.options.log.warn({ err: error, pod: pod.metadata?.name }, 'binding the pod failed');
    } finally {
      this.binding.delete(uid);
    }
  }

  /** Pods stop at once (no grace), the nodes are deleted, nothing is left running. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.informer?.stop();
    await Promise.all([...this.workers.values()].map((w) => w.kill()));
    this.workers.clear();
    for (const node of this.nodes) await node.stop(true);
    await this.cgroups?.remove();
    await this.dns?.stop();
    await this.serviceProxy?.stop();
    for (const socket of this.relayed) socket.destroy();
    await new Promise<void>((resolve) => (this.relay ? this.relay.close(() => resolve()) : resolve()));
    this.kubeConfig.destroy();
  }
}
