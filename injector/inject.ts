// The injection: a pure function of the pod, its namespace and the mesh settings, returning a JSON
// patch (RFC 6902) against the pod as given, a named skip reason, or a refusal for input the user
// must fix. The webhook and `flb inject` are thin shells around it; what it adds to a pod is built
// once per mesh (mesh-parts.ts).
import type { V1Container, V1Namespace, V1Pod } from '@kubernetes/client-node';
import type { Operation } from 'fast-json-patch';
import {
  APP_PRESTOP_ENV,
  BGP_ANNOUNCER_ANNOTATION,
  BGP_CONFIG_ANNOTATION,
  BGP_VIPS_ANNOTATION,
  INBOUND_PORT_EXCLUSION_ANNOTATION,
  INIT_CONTAINER_NAME,
  INTERCEPTION_ANNOTATION,
  INTERCEPTION_MODE_ANNOTATION,
  InterceptionSchema,
  OUTBOUND_IP_RANGE_EXCLUSION_ANNOTATION,
  OUTBOUND_IP_RANGE_INCLUSION_ANNOTATION,
  OUTBOUND_PORT_EXCLUSION_ANNOTATION,
  PROXY_RESOURCE_ANNOTATIONS,
  SIDECAR_CONTAINER_NAME,
  SIDECAR_INJECTED_LABEL,
  SIDECAR_INJECTED_VALUE,
  SIDECAR_STATUS_ANNOTATION,
  type Interception,
  type InterceptionMode,
  type Mesh,
} from '../common/contract/index.js';
import { AnnotationError, parseCidrList, parsePortList, parseVipList, union } from './exclusions.js';
import {
  APP_PROBES_ENV,
  interceptionPartsFor,
  meshParts,
  newAnnotations,
  podSidecar,
  sidecarResources,
  type InjectorSettings,
  type InterceptionParts,
  type MeshParts,
} from './mesh-parts.js';
import { appendToArray, insertIntoArray, pointerKey, setMapEntries } from './patch.js';
import { decide, SKIP_REASONS, type InvalidSetting, type SkipReason } from './policy.js';
import { appPreStopsJson, drainHooks, parseBgpAnnouncer, parseConfigMapName, type PreStopRewrite } from './prestop.js';
import { rewriteProbes, type AppProbe, type ProbeRewrite } from './probes.js';

export { APP_PROBES_ENV, REPO_DIR, REPO_VOLUME, STATE_DIR, STATE_VOLUME, type InjectorSettings, type SidecarStatus } from './mesh-parts.js';

export type InjectionResult =
  | {
      action: 'inject';
      /** Values may be shared with other results and are frozen: copy before changing anything. */
      patch: Operation[];
      /** Why the pod was selected, e.g. "namespace label flomesh.io/inject=enabled". */
      because: string;
      /** A pod that already had the sidecar, whose new containers only needed probe rewrites. */
      reinvocation: boolean;
      warnings: string[];
      /** Set when the namespace's Pod Security level will reject the interception init container. */
      podSecurityConflict?: string;
    }
  | { action: 'skip'; reason: SkipReason; message: string; warnings: string[] }
  | {
      action: 'deny';
      /** Every problem, quoting the pod's values. */
      message: string;
      /** The same in our own words only (which labels and annotations are wrong), for Events. */
      problem: string;
      /** The labels and annotations to fix; empty when the injector itself failed. */
      invalid: InvalidSetting[];
    };

/** A refusal naming every label and annotation that is wrong. */
function refusal(invalid: InvalidSetting[]): InjectionResult {
  return {
    action: 'deny',
    message: invalid.map((i) => i.message).join('; '),
    problem: invalid.map((i) => i.problem).join('; '),
    invalid,
  };
}

export function injectPod(
  pod: V1Pod,
  namespace: V1Namespace | undefined,
  settings: InjectorSettings,
  /** The workload a pod template belongs to, when there is no ownerReference to read it from (`flb inject`). */
  workload?: { kind: string; name: string },
): InjectionResult {
  const { mesh } = settings;
  const decision = decide(pod, namespace, mesh);
  if (!decision.inject && 'reason' in decision) {
    return { action: 'skip', reason: decision.reason, message: SKIP_REASONS[decision.reason], warnings: decision.warnings };
  }
  const warnings: string[] = [];
  if (decision.inject && isInjected(pod)) return reinvoke(pod, mesh, decision.because, warnings);

  // Every problem of the pod's labels and annotations at once, so one edit fixes them all.
  const annotations = new AnnotationReader(pod.metadata?.annotations ?? {});
  const mode = annotations.read(INTERCEPTION_MODE_ANNOTATION, (name, value) => parseInterceptionMode(name, value, mesh), mesh.interception.mode);
  const parts = meshParts(settings, mode);
  const interception = interceptionParts(pod, parts, annotations);
  const resources = podResources(parts, annotations);
  // A pod naming its BGP ConfigMap announces VIPs: one annotation is enough; bgp-announcer "false" still turns the hook off.
  const bgpConfig = annotations.read(BGP_CONFIG_ANNOTATION, parseConfigMapName, undefined);
  const bgpAnnouncer = annotations.read(BGP_ANNOUNCER_ANNOTATION, parseBgpAnnouncer, undefined) ?? bgpConfig !== undefined;
  const invalid = [...(decision.inject ? [] : decision.invalid), ...annotations.invalid];
  if (!decision.inject || !interception || invalid.length) return refusal(invalid);

  const containers = pod.spec?.containers ?? [];
  const rewrites = rewriteProbes(containers, mesh.ports, warnings);
  const preStops = bgpAnnouncer ? drainHooks(containers, mesh.ports, warnings) : [];
  const sidecar = withAppPreStops(podSidecar(parts, workload ?? ownerWorkload(pod), JSON.stringify(probeMap(rewrites)), resources), preStops);
  const initContainers = !settings.nativeSidecars ? [interception.init] : parts.sidecarFirst ? [sidecar, interception.init] : [interception.init, sidecar];

  const existing = pod.metadata?.annotations;
  const patch: Operation[] = [];
  if (pod.metadata === undefined) patch.push({ op: 'add', path: '/metadata', value: {} });
  if (existing === undefined) {
    patch.push({
      op: 'add',
      path: '/metadata/annotations',
      value: newAnnotations(parts, interception, () => addedAnnotations(parts, interception, undefined)),
    });
  } else {
    patch.push(...setMapEntries('/metadata/annotations', existing, addedAnnotations(parts, interception, existing)));
  }
  const labels = pod.metadata?.labels;
  patch.push(
    labels === undefined
      ? { op: 'add', path: '/metadata/labels', value: parts.injectedLabels }
      : { op: 'add', path: `/metadata/labels/${pointerKey(SIDECAR_INJECTED_LABEL)}`, value: SIDECAR_INJECTED_VALUE },
  );
  // Probe replacements use the container indexes as given, so they come before any insertion.
  for (const rewrite of rewrites) patch.push({ op: 'replace', path: `/spec/containers/${rewrite.containerIndex}/${rewrite.field}`, value: rewrite.probe });
  for (const preStop of preStops) patch.push(preStopOperation(preStop));
  patch.push(...insertIntoArray('/spec/initContainers', pod.spec?.initContainers, 0, initContainers));
  if (!settings.nativeSidecars) patch.push(...insertIntoArray('/spec/containers', containers, 0, [sidecar]));
  patch.push(...appendToArray('/spec/volumes', pod.spec?.volumes, parts.volumes as unknown[]));

  const podSecurityConflict = interception.interception.mode === 'iptables' ? podSecurityProblem(namespace, mesh) : undefined;
  if (podSecurityConflict) warnings.push(podSecurityConflict);
  return { action: 'inject', patch, because: decision.because, reinvocation: false, warnings, ...(podSecurityConflict ? { podSecurityConflict } : {}) };
}

/** The drain hook in place of the container's preStop (or its lifecycle's, or a new lifecycle). */
function preStopOperation(rewrite: PreStopRewrite): Operation {
  const container = `/spec/containers/${rewrite.containerIndex}`;
  if (!rewrite.hasLifecycle) return { op: 'add', path: `${container}/lifecycle`, value: { preStop: rewrite.hook } };
  return { op: rewrite.replaces ? 'replace' : 'add', path: `${container}/lifecycle/preStop`, value: rewrite.hook };
}

/**
 * The app containers' own hooks the sidecar runs after the drain. Rare (a BGP pod whose app has an
 * httpGet or sleep preStop), so the sidecar is copied without its pre-written JSON text.
 */
function withAppPreStops(sidecar: V1Container, preStops: readonly PreStopRewrite[]): V1Container {
  const value = appPreStopsJson(preStops);
  return value === undefined ? sidecar : { ...sidecar, env: [...(sidecar.env ?? []), { name: APP_PRESTOP_ENV, value }] };
}

/** Reads a pod's annotations, collecting every one it cannot accept instead of stopping at the first. */
class AnnotationReader {
  readonly invalid: InvalidSetting[] = [];
  constructor(private readonly annotations: Record<string, string>) {}

  hasAny(names: readonly string[]): boolean {
    return names.some((name) => this.annotations[name] !== undefined);
  }

  /** A problem found once the annotations were read together. */
  reject(error: AnnotationError): void {
    this.invalid.push(error.setting);
  }

  /** The parsed value, or `absent` when the annotation is missing or invalid (then it is in `invalid`). */
  read<T>(name: string, parse: (annotation: string, value: string) => T, absent: T): T {
    const value = this.annotations[name];
    if (value === undefined) return absent;
    try {
      return parse(name, value);
    } catch (error) {
      if (!(error instanceof AnnotationError)) throw error;
      this.invalid.push(error.setting);
      return absent;
    }
  }
}

export function isInjected(pod: V1Pod): boolean {
  return (
    pod.metadata?.annotations?.[SIDECAR_STATUS_ANNOTATION] !== undefined ||
    [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])].some((c) => c.name === SIDECAR_CONTAINER_NAME)
  );
}

/**
 * Reinvocation: another webhook ran after us and may have added containers. The sidecar is not
 * added again, but probes of containers we have not seen are rewritten and handed to the sidecar.
 */
function reinvoke(pod: V1Pod, mesh: Mesh, because: string, warnings: string[]): InjectionResult {
  const containers = pod.spec?.containers ?? [];
  const appContainers = containers.map((c, i) => ({ c, i })).filter(({ c }) => c.name !== SIDECAR_CONTAINER_NAME);
  const rewrites = rewriteProbes(
    appContainers.map(({ c }) => c),
    mesh.ports,
    warnings,
  ).map((r) => ({ ...r, containerIndex: appContainers[r.containerIndex]!.i }));
  const located = findSidecar(pod);
  if (rewrites.length === 0 || !located) {
    return { action: 'skip', reason: 'already-injected', message: SKIP_REASONS['already-injected'], warnings };
  }
  const patch: Operation[] = rewrites.map((r) => ({ op: 'replace', path: `/spec/containers/${r.containerIndex}/${r.field}`, value: r.probe }));
  const env = Array.isArray(located.container.env) ? located.container.env : [];
  const index = env.findIndex((e) => e?.name === APP_PROBES_ENV);
  const known = index >= 0 ? parseProbeMap(env[index]!.value) : {};
  const value = JSON.stringify({ ...known, ...probeMap(rewrites) });
  const envPath = `/spec/${located.list}/${located.index}/env`;
  // The whole entry: one that someone mangled (valueFrom, no value) would not take a value's replace.
  if (index >= 0) patch.push({ op: 'replace', path: `${envPath}/${index}`, value: { name: APP_PROBES_ENV, value } });
  else patch.push(...appendToArray(envPath, Array.isArray(located.container.env) ? located.container.env : undefined, [{ name: APP_PROBES_ENV, value }]));
  return { action: 'inject', patch, because, reinvocation: true, warnings };
}

/** The probes the sidecar already knows; a value someone else mangled is replaced, not trusted. */
function parseProbeMap(value: unknown): Record<string, AppProbe> {
  try {
    const parsed = JSON.parse(String(value ?? '{}')) as unknown;
    return parsed && typeof parsed === 'object' && !Array.isArray(parsed) ? (parsed as Record<string, AppProbe>) : {};
  } catch {
    return {};
  }
}

function findSidecar(pod: V1Pod): { list: 'initContainers' | 'containers'; index: number; container: V1Container } | undefined {
  for (const list of ['initContainers', 'containers'] as const) {
    const index = (pod.spec?.[list] ?? []).findIndex((c) => c.name === SIDECAR_CONTAINER_NAME);
    if (index >= 0) return { list, index, container: pod.spec![list]![index]! };
  }
  return undefined;
}

function probeMap(rewrites: ProbeRewrite[]): Record<string, AppProbe> {
  return Object.fromEntries(rewrites.map((r) => [r.path, r.original]));
}

/** The pod annotations its interception settings are made from. */
const EXCLUSION_ANNOTATIONS = [
  INBOUND_PORT_EXCLUSION_ANNOTATION,
  OUTBOUND_PORT_EXCLUSION_ANNOTATION,
  OUTBOUND_IP_RANGE_EXCLUSION_ANNOTATION,
  OUTBOUND_IP_RANGE_INCLUSION_ANNOTATION,
  BGP_VIPS_ANNOTATION,
];

/**
 * Most pods carry no exclusion annotations, so their interception settings, its JSON and the init
 * container are the same for every pod of a mesh: built once per distinct set of those annotations
 * (zod parsing and serialising them was a fifth of the webhook's CPU per review, bench/webhook.ts).
 * Undefined when an annotation is invalid (the reader has it).
 */
function interceptionParts(pod: V1Pod, parts: MeshParts, annotations: AnnotationReader): InterceptionParts | undefined {
  const values = pod.metadata?.annotations;
  // Most pods have none of the exclusion annotations: their key needs no string built.
  const key =
    values && EXCLUSION_ANNOTATIONS.some((a) => values[a] !== undefined) ? EXCLUSION_ANNOTATIONS.map((a) => values[a] ?? '\u0000').join('\u0001') : '';
  const found = parts.interception.get(key);
  if (found) return found;
  const before = annotations.invalid.length;
  const interception = interceptionFor(parts.settings.mesh, parts.mode, annotations);
  return annotations.invalid.length > before || !interception ? undefined : interceptionPartsFor(parts, key, () => interception);
}

/**
 * What the node agent the mesh deploys can set up (charts/flb-mesh/templates/cni.yaml): an iptables
 * mesh runs none; a cni mesh's runs unprivileged, without bpffs or the host's cgroup v2, so it
 * cannot load or attach the eBPF programs; an ebpf mesh's does all three (iptables pods it leaves
 * to their flb-init).
 */
const MODES_A_MESH_RUNS: Record<InterceptionMode, readonly InterceptionMode[]> = {
  iptables: ['iptables'],
  cni: ['iptables', 'cni'],
  ebpf: ['iptables', 'cni', 'ebpf'],
};

/** The pod's `flomesh.io/interception-mode`, refused when the mesh's node agent could not set the pod up. */
function parseInterceptionMode(annotation: string, value: string, mesh: Mesh): InterceptionMode {
  const meshMode = mesh.interception.mode;
  const allowed = MODES_A_MESH_RUNS[meshMode];
  const mode = value.trim();
  if (!Object.hasOwn(MODES_A_MESH_RUNS, mode)) {
    throw new AnnotationError(annotation, `${JSON.stringify(value)} is not an interception mode (expected "iptables", "cni" or "ebpf")`);
  }
  const chosen = mode as InterceptionMode;
  if (allowed.includes(chosen)) return chosen;
  const why =
    meshMode === 'iptables'
      ? `this mesh's interception.mode is "iptables", which deploys no CNI node agent to set the pod up, so it would run unmeshed or fail its validation`
      : `this mesh's interception.mode is "cni", whose node agent runs without eBPF (unprivileged, no bpffs or cgroup v2 mounts), so the pod would fail its validation`;
  const remedy =
    meshMode === 'iptables'
      ? `remove the annotation, or set the mesh's interception.mode to "${chosen}" (its node agent also sets up "iptables" pods)`
      : `choose "iptables" or "cni", or set the mesh's interception.mode to "ebpf" (its node agent does all three)`;
  throw new AnnotationError(annotation, `"${chosen}" is not available: ${why}; ${remedy}`);
}

/**
 * The mesh's interception defaults in the pod's mode, narrowed by the pod's exclusion annotations,
 * with its BGP VIPs. Undefined, with the reason in the reader, when the pod's mode cannot honour
 * the mesh's settings (the contract's refusal, as the pod's annotation made it).
 */
function interceptionFor(mesh: Mesh, mode: InterceptionMode, annotations: AnnotationReader): Interception | undefined {
  const m = mesh.interception;
  const bgpVips = annotations.read(BGP_VIPS_ANNOTATION, parseVipList, []);
  const parsed = InterceptionSchema.safeParse({
    version: 1,
    mode,
    proxyUid: mesh.proxyUid,
    outboundPort: mesh.ports.outbound,
    inboundPort: mesh.ports.inbound,
    dnsPort: mesh.ports.dns,
    sidecarPorts: Object.values(mesh.ports),
    captureDns: m.captureDns,
    ipv6: m.ipv6,
    excludeInboundPorts: union(m.excludeInboundPorts, annotations.read(INBOUND_PORT_EXCLUSION_ANNOTATION, parsePortList, [])),
    excludeOutboundPorts: union(m.excludeOutboundPorts, annotations.read(OUTBOUND_PORT_EXCLUSION_ANNOTATION, parsePortList, [])),
    excludeOutboundIpRanges: union(m.excludeOutboundIpRanges, annotations.read(OUTBOUND_IP_RANGE_EXCLUSION_ANNOTATION, parseCidrList, [])),
    includeOutboundIpRanges: union(m.includeOutboundIpRanges, annotations.read(OUTBOUND_IP_RANGE_INCLUSION_ANNOTATION, parseCidrList, [])),
    excludeInterfaces: m.excludeInterfaces,
    ...(bgpVips.length ? { bgpVips } : {}),
  });
  if (parsed.success) return parsed.data;
  // The annotations were each checked as they were read, so a refusal of the whole is the chosen
  // mode's clash with the mesh's settings (eBPF cannot honour excludeInterfaces); without a chosen
  // mode it is the mesh's own, which its schema refuses before any pod: a bug.
  if (!annotations.hasAny([INTERCEPTION_MODE_ANNOTATION])) throw parsed.error;
  const problems = parsed.error.issues.map((issue) => `${issue.path.join('.') || 'settings'}: ${issue.message}`).join('; ');
  annotations.reject(new AnnotationError(INTERCEPTION_MODE_ANNOTATION, `"${mode}" cannot honour this mesh's interception settings (${problems})`));
  return undefined;
}

const RESOURCE_ANNOTATIONS = Object.values(PROXY_RESOURCE_ANNOTATIONS);
const QUANTITY = /^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$/;

function parseQuantity(annotation: string, value: string): string {
  if (!QUANTITY.test(value)) throw new AnnotationError(annotation, `${JSON.stringify(value)} is not a Kubernetes quantity such as 100m or 128Mi`);
  return value;
}

/** The sidecar's resources: the mesh's (shared) unless the pod's annotations change them. */
function podResources(parts: MeshParts, annotations: AnnotationReader): NonNullable<V1Container['resources']> {
  if (!annotations.hasAny(RESOURCE_ANNOTATIONS)) return parts.defaultResources;
  const overrides = {
    cpuRequest: annotations.read(PROXY_RESOURCE_ANNOTATIONS.cpuRequest, parseQuantity, undefined),
    memoryRequest: annotations.read(PROXY_RESOURCE_ANNOTATIONS.memoryRequest, parseQuantity, undefined),
    cpuLimit: annotations.read(PROXY_RESOURCE_ANNOTATIONS.cpuLimit, parseQuantity, undefined),
    memoryLimit: annotations.read(PROXY_RESOURCE_ANNOTATIONS.memoryLimit, parseQuantity, undefined),
  };
  if (Object.values(overrides).every((v) => v === undefined)) return parts.defaultResources;
  return sidecarResources(parts.settings.mesh, overrides);
}

/** Status, interception settings, and Prometheus scrape settings unless the app has its own. */
function addedAnnotations(parts: MeshParts, interception: InterceptionParts, existing: Record<string, string> | undefined): Record<string, string> {
  const annotations: Record<string, string> = { [SIDECAR_STATUS_ANNOTATION]: parts.status, [INTERCEPTION_ANNOTATION]: interception.json };
  if (existing?.['prometheus.io/scrape'] === undefined) {
    Object.assign(annotations, {
      'prometheus.io/scrape': 'true',
      'prometheus.io/port': String(parts.settings.mesh.ports.metrics),
      'prometheus.io/path': '/metrics',
    });
  }
  return annotations;
}

/**
 * The workload a pod belongs to, for the sidecar's identity and metrics: the Deployment (or Argo
 * Rollout) whose ReplicaSet made it, not the ReplicaSet.
 */
export function ownerWorkload(pod: V1Pod): { kind: string; name: string } {
  // The admission shape check does not cover ownerReferences or generateName: anything may be here,
  // and only strings may go into the sidecar's env.
  const references: unknown[] = Array.isArray(pod.metadata?.ownerReferences) ? pod.metadata.ownerReferences : [];
  const owners = references.filter(
    (o): o is { kind: string; name: string; controller?: unknown } =>
      typeof o === 'object' && o !== null && typeof (o as { kind?: unknown }).kind === 'string' && typeof (o as { name?: unknown }).name === 'string',
  );
  const owner = owners.find((o) => o.controller === true) ?? owners[0];
  const labels = pod.metadata?.labels ?? {};
  for (const [kind, hashLabel] of [
    ['Deployment', 'pod-template-hash'],
    ['Rollout', 'rollouts-pod-template-hash'],
  ] as const) {
    const hash = labels[hashLabel];
    if (owner?.kind === 'ReplicaSet' && hash && owner.name.endsWith(`-${hash}`)) return { kind, name: owner.name.slice(0, -hash.length - 1) };
  }
  if (owner) return { kind: owner.kind, name: owner.name };
  const { name, generateName } = pod.metadata ?? {};
  return { kind: 'Pod', name: typeof name === 'string' ? name : typeof generateName === 'string' ? generateName : '' };
}

/** Pod Security baseline and restricted both forbid NET_ADMIN: say so, and what to do. */
function podSecurityProblem(namespace: V1Namespace | undefined, mesh: Mesh): string | undefined {
  const level = namespace?.metadata?.labels?.['pod-security.kubernetes.io/enforce'];
  if (level !== 'baseline' && level !== 'restricted') return undefined;
  // A mesh whose node agent runs can set this pod up instead, if the pod asks.
  const cni =
    mesh.interception.mode === 'iptables'
      ? 'use the CNI interception mode (mesh interception.mode: cni)'
      : `annotate the pod ${INTERCEPTION_MODE_ANNOTATION}: ${mesh.interception.mode} (or remove its "iptables")`;
  return (
    `namespace ${namespace?.metadata?.name} enforces Pod Security "${level}", which rejects the ${INIT_CONTAINER_NAME} init container ` +
    `(NET_ADMIN and NET_RAW as root); ${cni}, or enforce "privileged" in this namespace`
  );
}
