// The whole development environment in one call, as `flb demo` and the end-to-end tests use it:
// a pod network on a bridge, a real control plane whose certificate names the bridge's gateway,
// and the node simulator running pods on it. stop() removes everything it made; a run killed
// before it could is cleaned by the next (pod-network.ts, processes.ts).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from '../common/log.js';
import { startControlPlane, type ControlPlane, type ControlPlaneOptions } from './controlplane.js';
import { NodeSimulator, type NodeSpec } from './node-simulator/simulator.js';
import { PodNetwork, type PodNetworkOptions } from './pod-network.js';
import { startReaper } from './processes.js';

export interface DevEnvironment {
  readonly plane: ControlPlane;
  readonly network: PodNetwork;
  readonly simulator: NodeSimulator;
  /** The folder of pod logs, volumes and network state; removed by stop(). */
  readonly dir: string;
  stop(): Promise<void>;
}

export interface DevEnvironmentOptions {
  log: Logger;
  nodes?: NodeSpec[];
  controlPlane?: Omit<ControlPlaneOptions, 'extraServingAddresses'>;
  /**
   * The pod network's CNI runtime: plugin folders and environment beyond Debian's reference
   * plugins (the mesh's CNI plugin, installed with `flb cni install`, and its agent's socket).
   */
  podNetwork?: Pick<PodNetworkOptions, 'cniBinDirs' | 'cniEnv'>;
  /** Restart back-off of the simulated kubelet (10 s, as the kubelet's, unless told). */
  backoffBaseMs?: number;
  /** ClusterIPs reachable from pods without a sidecar, as kube-proxy makes them (the chart's control plane needs it). */
  serviceProxy?: boolean;
  onProgress?: (message: string) => void;
}

export async function startDevEnvironment(options: DevEnvironmentOptions): Promise<DevEnvironment> {
  const progress = options.onProgress ?? ((message: string) => options.log.info(message));
  const dir = mkdtempSync(join(tmpdir(), 'flb-devenv-'));
  // Pod folders go with this process however it ends; processes die by pdeathsig, namespaces and
  // the bridge are removed by the next run.
  const reaper = startReaper(dir);
  let network: PodNetwork | undefined;
  let plane: ControlPlane | undefined;
  let simulator: NodeSimulator | undefined;
  const stop = async () => {
    await simulator?.stop();
    await plane?.stop();
    await network?.close();
    rmSync(dir, { recursive: true, force: true });
    await reaper.dismiss();
  };
  try {
    progress('making the pod network (a bridge and the CNI config)');
    network = await PodNetwork.create({ ...options.podNetwork, dir });
    plane = await startControlPlane({ ...options.controlPlane, onProgress: progress, extraServingAddresses: [network.gateway] });
    progress('starting the node simulator');
    const server = new URL(plane.server);
    simulator = await NodeSimulator.start({
      kubeConfig: plane.kubeConfig,
      network,
      apiserver: { host: server.hostname, port: Number(server.port) },
      dir,
      log: options.log,
      ...(options.nodes ? { nodes: options.nodes } : {}),
      ...(options.backoffBaseMs ? { backoffBaseMs: options.backoffBaseMs } : {}),
      ...(options.serviceProxy ? { serviceProxy: true } : {}),
    });
    return { plane, network, simulator, dir, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}
