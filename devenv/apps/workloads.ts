// The demo's workloads as Kubernetes objects, shared by `flb demo` and the end-to-end tests that
// run them: the echo server and the client (apps/demo.ts) as Deployments, and what the client's
// GET /stats answers.
import type { V1Deployment, V1Pod } from '@kubernetes/client-node';
import { DEMO_IMAGE } from '../node-simulator/images.js';

/** What `flb-demo client` answers on GET /stats. */
export interface ClientStats {
  sent: number;
  ok: number;
  failed: number;
  byPod: Record<string, number>;
  lastError?: string;
}

/** A Deployment of the demo image (`args`: echo or client and its flags), ready once /healthz answers on `port`. */
export const demoDeployment = (
  name: string,
  replicas: number,
  args: string[],
  port: { name: string; containerPort: number },
  terminationGracePeriodSeconds = 10,
): V1Deployment => ({
  metadata: { name },
  spec: {
    replicas,
    selector: { matchLabels: { app: name } },
    template: {
      metadata: { labels: { app: name } },
      spec: {
        terminationGracePeriodSeconds,
        containers: [{ name, image: DEMO_IMAGE, args, ports: [port], readinessProbe: { httpGet: { path: '/healthz', port: port.name }, periodSeconds: 1 } }],
      },
    },
  },
});

/** Ready, and not on its way out. */
export const isPodReady = (pod: V1Pod): boolean =>
  pod.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true && !pod.metadata?.deletionTimestamp;
