// The BGP drain's preStop hook on the app containers of pods whose sidecar announces VIPs (the pod
// annotation `flomesh.io/bgp-announcer: "true"`, or `flomesh.io/bgp-config` naming the ConfigMap the
// registry bridge reads the pod's bgp section from; the injector cannot see the pod's sidecar.json).
//
// With native sidecars the kubelet stops the app containers first and the sidecar only once they
// have exited, so the sidecar's own SIGTERM would withdraw the VIPs after the app is gone, while the
// routers still send it traffic. The kubelet runs a container's preStop hook before its SIGTERM and
// waits for it (bounded by terminationGracePeriodSeconds, which counts from the start of the pod's
// termination, hook included). So each app container gets an httpGet preStop to a sidecar probe
// port (bound on the pod IP, where the kubelet sends a hook; the admin port is 127.0.0.1 only):
// `/drain/bgp` starts the drain and answers once the VIPs are withdrawn, and the app gets SIGTERM
// after that. An exec hook would need a binary of ours in the app's image.
//
// A container keeps only one preStop, so the app's own:
// - httpGet or sleep: moved to the sidecar (FLB_APP_PRESTOP, by container name), which runs it once
//   the drain is done (`?container=NAME`), as the kubelet would have: the app still gets it before
//   its SIGTERM, only later;
// - exec: kept as it is (the sidecar cannot run a command in the app's container), with a warning:
//   that container's VIPs are withdrawn at the sidecar's SIGTERM, after the app, unless the hook
//   itself calls the drain first;
// - tcpSocket: the kubelet never runs it (deprecated, kept for compatibility), so it is replaced.
import type { V1Container, V1LifecycleHandler } from '@kubernetes/client-node';
import { BGP_DRAIN_PATH, type AppPreStop, type SidecarPorts } from '../common/contract/index.js';
import { AnnotationError } from './exclusions.js';

export interface PreStopRewrite {
  containerIndex: number;
  /** The container had a lifecycle object: the hook goes in it, else a lifecycle is added. */
  hasLifecycle: boolean;
  /** The container had a preStop (replaced), else one is added. */
  replaces: boolean;
  hook: V1LifecycleHandler;
  container: string;
  original?: AppPreStop;
}

/** "true" adds the drain hook, "false" (or no annotation) does not; anything else refuses the pod. */
export function parseBgpAnnouncer(annotation: string, value: string): boolean {
  if (value === 'true') return true;
  if (value === 'false') return false;
  throw new AnnotationError(annotation, `${JSON.stringify(value)} is not "true" or "false" (say "true" when the pod's sidecar.json has a bgp section)`);
}

/** The flomesh.io/bgp-config annotation: a ConfigMap name (RFC 1123 subdomain), which the registry bridge reads. */
export function parseConfigMapName(annotation: string, value: string): string {
  const name = value.trim();
  if (name.length <= 253 && /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/.test(name)) return name;
  throw new AnnotationError(annotation, `${JSON.stringify(value)} is not a ConfigMap name (lowercase letters, digits, "-" and ".")`);
}

/** The drain hook for each app container, with its own hook moved to the sidecar where it can be. */
export function drainHooks(containers: readonly V1Container[], ports: SidecarPorts, warnings: string[]): PreStopRewrite[] {
  const rewrites: PreStopRewrite[] = [];
  const hook = (query: string): V1LifecycleHandler => ({ httpGet: { path: `${BGP_DRAIN_PATH}${query}`, port: ports.readinessProbe, scheme: 'HTTP' } });
  const drainUrl = `http://127.0.0.1:${ports.readinessProbe}${BGP_DRAIN_PATH}`;
  containers.forEach((container, containerIndex) => {
    const preStop = container.lifecycle?.preStop;
    const at = { containerIndex, container: container.name, hasLifecycle: container.lifecycle !== undefined, replaces: preStop !== undefined };
    if (!preStop || (!preStop.exec && !preStop.httpGet && !preStop.sleep)) {
      rewrites.push({ ...at, hook: hook('') });
      return;
    }
    if (preStop.httpGet?.path?.startsWith(BGP_DRAIN_PATH) && Number(preStop.httpGet.port) === ports.readinessProbe) return;
    if (preStop.exec) {
      warnings.push(
        `container ${container.name} has an exec preStop hook, kept as it is: the sidecar cannot run it, so its BGP drain starts only when the sidecar stops, after the app; ` +
          `to withdraw the VIPs before the app stops, make the hook call ${drainUrl} first (it answers once they are withdrawn)`,
      );
      return;
    }
    const original = originalHook(container, preStop, warnings);
    if (!original) return;
    rewrites.push({ ...at, hook: hook(`?container=${encodeURIComponent(container.name)}`), original });
  });
  return rewrites;
}

function originalHook(container: V1Container, preStop: V1LifecycleHandler, warnings: string[]): AppPreStop | undefined {
  if (preStop.sleep) return { type: 'sleep', seconds: preStop.sleep.seconds };
  const httpGet = preStop.httpGet!;
  const port = resolvePort(container, httpGet.port as number | string);
  if (port === undefined) {
    warnings.push(
      `container ${container.name} preStop hook: named port "${String(httpGet.port)}" is not declared by the container; hook left as it is, ` +
        'so its BGP drain starts only when the sidecar stops, after the app',
    );
    return undefined;
  }
  return {
    type: 'http',
    port,
    path: httpGet.path ?? '/',
    scheme: httpGet.scheme === 'HTTPS' ? 'HTTPS' : 'HTTP',
    ...(httpGet.host ? { host: httpGet.host } : {}),
    headers: (httpGet.httpHeaders ?? []).map((h) => ({ name: h.name, value: h.value })),
  };
}

function resolvePort(container: V1Container, port: number | string): number | undefined {
  if (typeof port === 'number') return port;
  if (/^\d+$/.test(port)) return Number(port);
  return container.ports?.find((p) => p.name === port)?.containerPort;
}

/** FLB_APP_PRESTOP's value, or undefined when no container's own hook moved to the sidecar. */
export function appPreStopsJson(rewrites: readonly PreStopRewrite[]): string | undefined {
  const moved = rewrites.filter((r) => r.original !== undefined);
  return moved.length ? JSON.stringify(Object.fromEntries(moved.map((r) => [r.container, r.original]))) : undefined;
}
