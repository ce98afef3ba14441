import type { V1Container, V1Probe } from '@kubernetes/client-node';
import type { z } from 'zod';
import type { ProbeSchema, SidecarPorts } from '../common/contract/index.js';

export type AppProbe = z.input<typeof ProbeSchema>;
export const PROBE_KINDS = ['liveness', 'readiness', 'startup'] as const;
export type ProbeKind = (typeof PROBE_KINDS)[number];

const probeField = { liveness: 'livenessProbe', readiness: 'readinessProbe', startup: 'startupProbe' } as const;
const sidecarPortKey = { liveness: 'livenessProbe', readiness: 'readinessProbe', startup: 'startupProbe' } as const;

/** The path the kubelet probes on the sidecar; the sidecar maps it back to the app's probe. */
export function appHealthPath(container: string, kind: ProbeKind): string {
  return `/app-health/${container}/${kind}`;
}

export interface ProbeRewrite {
  containerIndex: number;
  kind: ProbeKind;
  field: (typeof probeField)[ProbeKind];
  path: string;
  probe: V1Probe;
  original: AppProbe;
}

/**
 * With inbound traffic intercepted, the kubelet's probes would go through the proxy and fail
 * before the app is in the mesh (or be refused under strict mTLS later). Each HTTP, TCP and gRPC
 * probe becomes an HTTP GET on a sidecar probe port that is never captured; the sidecar runs the
 * original probe against the app. Timing fields are kept; exec probes need nothing.
 */
export function rewriteProbes(containers: readonly V1Container[], ports: SidecarPorts, warnings: string[]): ProbeRewrite[] {
  const rewrites: ProbeRewrite[] = [];
  const sidecarProbePorts = new Set([ports.livenessProbe, ports.readinessProbe, ports.startupProbe]);
  containers.forEach((container, containerIndex) => {
    for (const kind of PROBE_KINDS) {
      const field = probeField[kind];
      const probe = container[field];
      if (!probe) continue;
      if (probe.httpGet && sidecarProbePorts.has(Number(probe.httpGet.port)) && probe.httpGet.path?.startsWith('/app-health/')) continue;
      const original = originalProbe(container, probe, kind, warnings);
      if (!original) continue;
      const path = appHealthPath(container.name, kind);
      const sidecarPort = ports[sidecarPortKey[kind]];
      const { httpGet: _h, tcpSocket: _t, grpc: _g, ...timing } = probe;
      rewrites.push({
        containerIndex,
        kind,
        field,
        path,
        probe: { ...timing, httpGet: { path, port: sidecarPort, scheme: 'HTTP' } },
        original: { kind, sidecarPort, original, timeoutSeconds: probe.timeoutSeconds ?? 1 },
      });
    }
  });
  return rewrites;
}

function originalProbe(container: V1Container, probe: V1Probe, kind: ProbeKind, warnings: string[]): AppProbe['original'] | undefined {
  const where = `container ${container.name} ${kind} probe`;
  const resolve = (port: number | string | undefined): number | undefined => {
    if (typeof port === 'number') return port;
    if (port === undefined) return undefined;
    if (/^\d+$/.test(port)) return Number(port);
    const named = container.ports?.find((p) => p.name === port)?.containerPort;
    if (named === undefined) warnings.push(`${where}: named port "${port}" is not declared by the container; probe left as it is`);
    return named;
  };
  if (probe.httpGet) {
    const port = resolve(probe.httpGet.port as number | string);
    if (port === undefined) return undefined;
    return {
      type: 'http',
      port,
      path: probe.httpGet.path ?? '/',
      scheme: probe.httpGet.scheme === 'HTTPS' ? 'HTTPS' : 'HTTP',
      ...(probe.httpGet.host ? { host: probe.httpGet.host } : {}),
      headers: (probe.httpGet.httpHeaders ?? []).map((h) => ({ name: h.name, value: h.value })),
    };
  }
  if (probe.tcpSocket) {
    const port = resolve(probe.tcpSocket.port as number | string);
    if (port === undefined) return undefined;
    return { type: 'tcp', port, ...(probe.tcpSocket.host ? { host: probe.tcpSocket.host } : {}) };
  }
  if (probe.grpc) {
    return { type: 'grpc', port: probe.grpc.port, ...(probe.grpc.service ? { service: probe.grpc.service } : {}) };
  }
  return undefined;
}
