// The floor of bench/bridge.ts: a bare informer (@kubernetes/client-node's ListWatch, whole objects,
// nothing done with them) on EndpointSlices and injected pods, in its own process. It prints when it
// sees what the benchmark changes: `slice <mark> <epoch ms>` for a slice whose endpoints carry a
// new `mark-<n>` pod name, `pod <namespace>/<name> <epoch ms>` for an injected pod first seen.
// `ready` once both have listed.
import { CoreV1Api, DiscoveryV1Api, KubeConfig, makeInformer, type V1EndpointSlice, type V1Pod } from '@kubernetes/client-node';
import { SIDECAR_INJECTED_LABEL, SIDECAR_INJECTED_VALUE } from '../../common/contract/index.js';

const kubeConfig = new KubeConfig();
kubeConfig.loadFromFile(process.argv[2]!);
const now = () => performance.timeOrigin + performance.now();
const discovery = kubeConfig.makeApiClient(DiscoveryV1Api);
const core = kubeConfig.makeApiClient(CoreV1Api);
const injected = `${SIDECAR_INJECTED_LABEL}=${SIDECAR_INJECTED_VALUE}`;

const slices = makeInformer<V1EndpointSlice>(
  kubeConfig,
  '/apis/discovery.k8s.io/v1/endpointslices',
  () => discovery.listEndpointSliceForAllNamespaces({ labelSelector: 'kubernetes.io/service-name' }),
  'kubernetes.io/service-name',
);
const pods = makeInformer<V1Pod>(kubeConfig, '/api/v1/pods', () => core.listPodForAllNamespaces({ labelSelector: injected }), injected);

const seenMark = (slice: V1EndpointSlice) => {
  const at = now();
  for (const endpoint of slice.endpoints ?? []) {
    const mark = /^mark-(\d+)$/.exec(endpoint.targetRef?.name ?? '')?.[1];
    if (mark !== undefined) process.stdout.write(`slice ${mark} ${at.toFixed(3)}\n`);
  }
};
slices.on('update', seenMark);
slices.on('add', seenMark);
pods.on('add', (pod) => process.stdout.write(`pod ${pod.metadata?.namespace}/${pod.metadata?.name} ${now().toFixed(3)}\n`));
for (const informer of [slices, pods]) {
  informer.on('error', (error: unknown) => {
    process.stderr.write(`floor informer: ${String(error)}; restarting in 1 s\n`);
    setTimeout(() => void informer.start(), 1000);
  });
}
await Promise.all([slices.start(), pods.start()]);
process.stdout.write('ready\n');
