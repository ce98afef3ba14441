import { describe, expect, it } from '@jest/globals';
import type { V1Pod } from '@kubernetes/client-node';
import { podStatus, type ContainerView, type PodView } from './status.js';

const pod: V1Pod = { metadata: { name: 'p', namespace: 'n', uid: 'u' }, spec: { containers: [] } };
const running = (name: string, role: ContainerView['role'], ready: boolean, started = true): ContainerView => ({
  name,
  image: 'img',
  role,
  state: { running: { startedAt: new Date(0) } },
  started,
  ready,
  restartCount: 0,
});
const view = (containers: ContainerView[], initialized = true): PodView => ({
  hostIP: '10.200.0.1',
  podIP: '10.200.1.5',
  startTime: new Date(0),
  sandboxReady: true,
  initialized,
  containers,
});
const condition = (status: ReturnType<typeof podStatus>, type: string) => status.conditions?.find((c) => c.type === type)?.status;

describe('pod status', () => {
  it('is Ready only when every app container and every native sidecar is ready', () => {
    const sidecarNotReady = podStatus(pod, view([running('flb-sidecar', 'sidecar', false), running('app', 'app', true)]));
    expect(condition(sidecarNotReady, 'Ready')).toBe('False');
    expect(sidecarNotReady.conditions?.find((c) => c.type === 'Ready')?.reason).toBe('ContainersNotReady');
    const all = podStatus(pod, view([running('flb-sidecar', 'sidecar', true), running('app', 'app', true)]));
    expect(all.phase).toBe('Running');
    expect(condition(all, 'Ready')).toBe('True');
    expect(condition(all, 'ContainersReady')).toBe('True');
    expect(all.podIP).toBe('10.200.1.5');
  });

  it('lists init containers and native sidecars as init container statuses, in order', () => {
    const status = podStatus(
      pod,
      view([
        { ...running('flb-init', 'init', false), state: { terminated: { exitCode: 0, reason: 'Completed' } } },
        running('flb-sidecar', 'sidecar', true),
        running('app', 'app', true),
      ]),
    );
    expect(status.initContainerStatuses?.map((c) => c.name)).toEqual(['flb-init', 'flb-sidecar']);
    expect(status.containerStatuses?.map((c) => c.name)).toEqual(['app']);
    expect(status.initContainerStatuses?.[1]).toMatchObject({ started: true, ready: true });
  });

  it('stays Pending and not Initialized while init containers run', () => {
    const status = podStatus(
      pod,
      view([running('flb-init', 'init', false), { ...running('app', 'app', false, false), state: { waiting: { reason: 'PodInitializing' } } }], false),
    );
    expect(status.phase).toBe('Pending');
    expect(condition(status, 'Initialized')).toBe('False');
    expect(status.conditions?.find((c) => c.type === 'Ready')?.reason).toBe('ContainersNotInitialized');
  });

  it('keeps a condition transition time while its status does not change', () => {
    const first = podStatus(pod, view([running('app', 'app', true)]), new Date(1_000));
    const again = podStatus({ ...pod, status: first }, view([running('app', 'app', true)]), new Date(9_000));
    expect(again.conditions?.find((c) => c.type === 'Ready')?.lastTransitionTime).toEqual(new Date(1_000));
    const flipped = podStatus({ ...pod, status: again }, view([running('app', 'app', false)]), new Date(12_000));
    expect(flipped.conditions?.find((c) => c.type === 'Ready')?.lastTransitionTime).toEqual(new Date(12_000));
  });

  it('reports a terminal phase, never Ready', () => {
    const status = podStatus(pod, {
      ...view([{ ...running('job', 'app', false), state: { terminated: { exitCode: 0, reason: 'Completed' } } }]),
      terminalPhase: 'Succeeded',
    });
    expect(status.phase).toBe('Succeeded');
    expect(condition(status, 'Ready')).toBe('False');
  });
});
