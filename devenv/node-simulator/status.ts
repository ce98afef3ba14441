// A pod's status as the kubelet reports it, from what the node knows of its containers. Pure, so
// the rules (phase, conditions, which containers count towards readiness) are tested alone.
import type { V1ContainerState, V1ContainerStateTerminated, V1ContainerStatus, V1Pod, V1PodCondition, V1PodStatus } from '@kubernetes/client-node';

export type ContainerRole = 'init' | 'sidecar' | 'app';

export interface ContainerView {
  name: string;
  image: string;
  role: ContainerRole;
  state: V1ContainerState;
  lastState?: V1ContainerStateTerminated;
  /** Startup probe passed (or none) and postStart done. */
  started: boolean;
  ready: boolean;
  restartCount: number;
  containerID?: string;
}

export interface PodView {
  hostIP: string;
  podIP?: string;
  startTime: Date;
  sandboxReady: boolean;
  /** Every regular init container succeeded and every sidecar started. */
  initialized: boolean;
  containers: ContainerView[];
  /** A pod whose containers have all ended for good (restartPolicy Never or OnFailure). */
  terminalPhase?: 'Succeeded' | 'Failed';
  reason?: string;
  message?: string;
}

function containerStatus(c: ContainerView): V1ContainerStatus {
  return {
    name: c.name,
    image: c.image,
    imageID: `flb-devenv://${c.image}`,
    ...(c.containerID ? { containerID: c.containerID } : {}),
    state: c.state,
    ...(c.lastState ? { lastState: { terminated: c.lastState } } : { lastState: {} }),
    ready: c.ready,
    started: c.started,
    restartCount: c.restartCount,
  };
}

/** Conditions with the previous transition times kept while their status does not change. */
function condition(type: string, ok: boolean, previous: V1PodCondition[] | undefined, now: Date, reason?: string): V1PodCondition {
  const status = ok ? 'True' : 'False';
  const before = previous?.find((c) => c.type === type);
  const lastTransitionTime = before && before.status === status && before.lastTransitionTime ? before.lastTransitionTime : now;
  return { type, status, lastTransitionTime, ...(ok || !reason ? {} : { reason }) } as V1PodCondition;
}

export function podStatus(pod: V1Pod, view: PodView, now = new Date()): V1PodStatus {
  const previous = pod.status?.conditions;
  const apps = view.containers.filter((c) => c.role === 'app');
  const sidecars = view.containers.filter((c) => c.role === 'sidecar');
  const containersReady = view.initialized && apps.every((c) => c.ready) && sidecars.every((c) => c.ready);
  // Running once every container has been created (a restarting one waits, but it ran).
  const allCreated = apps.every((c) => !c.state.waiting || c.restartCount > 0);
  const phase = view.terminalPhase ?? (view.initialized && allCreated ? 'Running' : 'Pending');
  const notReadyReason = view.initialized ? 'ContainersNotReady' : 'ContainersNotInitialized';
  const scheduled = previous?.find((c) => c.type === 'PodScheduled') ?? { type: 'PodScheduled', status: 'True', lastTransitionTime: now };
  return {
    phase,
    hostIP: view.hostIP,
    hostIPs: [{ ip: view.hostIP }],
    ...(view.podIP ? { podIP: view.podIP, podIPs: [{ ip: view.podIP }] } : {}),
    startTime: view.startTime,
    ...(view.reason ? { reason: view.reason } : {}),
    ...(view.message ? { message: view.message } : {}),
    qosClass: pod.status?.qosClass ?? 'BestEffort',
    conditions: [
      condition('PodReadyToStartContainers', view.sandboxReady, previous, now),
      condition('Initialized', view.initialized, previous, now, 'ContainersNotInitialized'),
      condition('Ready', containersReady && !view.terminalPhase, previous, now, notReadyReason),
      condition('ContainersReady', containersReady && !view.terminalPhase, previous, now, notReadyReason),
      scheduled as V1PodCondition,
    ],
    initContainerStatuses: view.containers.filter((c) => c.role !== 'app').map(containerStatus),
    containerStatuses: apps.map(containerStatus),
  };
}
