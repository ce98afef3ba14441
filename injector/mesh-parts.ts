// What the injector adds to a pod, built once per mesh, injector settings and interception mode
// (the mesh's, or the one a pod's annotation chose) instead of once per pod: the sidecar container
// as a template with a few per-pod holes, the init and validation containers, the volumes, the
// status annotation, and their JSON text (json-text.ts). A new mesh object (a changed mesh.json)
// gets parts of its own; the old ones go with it (WeakMap).
import type { V1Container, V1EnvVar, V1Probe, V1Volume } from '@kubernetes/client-node';
import {
  INIT_CONTAINER_NAME,
  INTERCEPTION_MODE_ENV,
  REPO_CA_CONFIGMAP,
  REPO_CA_CONFIGMAP_KEY,
  REPO_CA_FILE_ENV,
  SIDECAR_CONTAINER_NAME,
  SIDECAR_INJECTED_LABEL,
  SIDECAR_INJECTED_VALUE,
  VALIDATION_CONTAINER_NAME,
  type Interception,
  type InterceptionMode,
  type Mesh,
} from '../common/contract/index.js';
import { deepFreeze, jsonText, JsonTemplate, rememberJson } from './json-text.js';

export interface InjectorSettings {
  mesh: Mesh;
  /** Inject the sidecar as an init container with restartPolicy Always (Kubernetes 1.29+). */
  nativeSidecars: boolean;
  /** flb-mesh version, recorded in the sidecar-status annotation. */
  version: string;
}

export const APP_PROBES_ENV = 'FLB_APP_PROBES';
/** One projected volume with what the sidecar shows and trusts at the repo: its token and the repo's CA. */
export const REPO_VOLUME = 'flb-repo-access';
export const STATE_VOLUME = 'flb-state';
export const REPO_DIR = '/var/run/secrets/flomesh.io/repo';
export const STATE_DIR = '/var/lib/flb';

export interface SidecarStatus {
  version: string;
  mode: Interception['mode'];
  native: boolean;
  initContainers: string[];
  containers: string[];
  volumes: string[];
}

type Resources = NonNullable<V1Container['resources']>;
type SidecarHole = 'workloadKind' | 'workloadName' | 'appProbes' | 'resources';

export interface MeshParts {
  settings: InjectorSettings;
  /** The pods' interception mode these parts are for. */
  mode: InterceptionMode;
  /** Frozen; their JSON is remembered. */
  volumes: readonly V1Volume[];
  /** The flomesh.io/sidecar-status annotation's value. */
  status: string;
  /** The sidecar's resources when the pod's annotations do not change them (frozen). */
  defaultResources: Resources;
  /** The labels map of a pod that had none (frozen). */
  injectedLabels: Readonly<Record<string, string>>;
  /** The native sidecar goes before flb-init, which waits for it (sidecarStartsFirst). */
  sidecarFirst: boolean;
  /** The sidecar container, with placeholders in the holes; never handed out. */
  sidecarBase: V1Container;
  sidecarTemplate: JsonTemplate<SidecarHole>;
  /** Where the per-pod variables sit in sidecarBase.env. */
  envIndex: Record<Exclude<SidecarHole, 'resources'>, number>;
  /** Interception settings, their JSON and the init (or validation) container, per distinct set of exclusion annotations. */
  interception: Map<string, InterceptionParts>;
}

export interface InterceptionParts {
  interception: Interception;
  json: string;
  /** flb-init (iptables) or flb-validation (cni, ebpf), frozen. */
  init: V1Container;
  /** The annotations map of a pod that had none (frozen); made on first use. */
  newAnnotations?: Readonly<Record<string, string>>;
}

const partsByMesh = new WeakMap<Mesh, Map<string, MeshParts>>();

/** The parts for pods in `mode` (default: the mesh's); at most three sets per mesh and settings. */
export function meshParts(settings: InjectorSettings, mode: InterceptionMode = settings.mesh.interception.mode): MeshParts {
  let perMesh = partsByMesh.get(settings.mesh);
  if (!perMesh) partsByMesh.set(settings.mesh, (perMesh = new Map()));
  const key = `${settings.nativeSidecars}\u0000${settings.version}\u0000${mode}`;
  let parts = perMesh.get(key);
  if (!parts) perMesh.set(key, (parts = buildParts(settings, mode)));
  return parts;
}

/**
 * Whether the native sidecar starts before flb-init instead of after it. The sidecar needs no rules
 * to start (its own traffic is the proxy UID's, which the rules leave alone, and they redirect only
 * SYNs, so its connections made before them keep their replies: cni/rules.ts), so applying them
 * while it starts takes the init container's ~0.5 s off every injected pod's start; flb-init then
 * holds the app until the sidecar is ready, as the postStart hook and startup probe did (the
 * sidecar gets neither: the kubelet counts it started at once and runs flb-init). Only with the
 * mesh's own commands, which know that hand-over: a custom init command or waiter (another
 * proxy's image) keeps the usual order, and so does a pod in CNI or eBPF mode (the mesh's or its
 * own choice): its validation listens on the outbound port, so it must run before the sidecar binds it.
 */
export function sidecarStartsFirst(settings: InjectorSettings, mode: InterceptionMode): boolean {
  const { mesh } = settings;
  return (
    settings.nativeSidecars &&
    mode === 'iptables' &&
    runsFlb(mesh.init.command, 'iptables', 'apply') &&
    runsFlb(mesh.sidecar.waitReadyCommand, 'sidecar', 'wait-ready')
  );
}

function buildParts(settings: InjectorSettings, mode: InterceptionMode): MeshParts {
  const { mesh } = settings;
  const volumes = frozenWithJson(sidecarVolumes(mesh));
  const sidecarFirst = sidecarStartsFirst(settings, mode);
  const sidecarBase = sidecarContainer(settings, mode, sidecarFirst);
  const envNames = (sidecarBase.env ?? []).map((e) => e.name);
  const interceptionContainer = mode === 'iptables' ? INIT_CONTAINER_NAME : VALIDATION_CONTAINER_NAME;
  const initContainers = !settings.nativeSidecars
    ? [interceptionContainer]
    : sidecarFirst
      ? [SIDECAR_CONTAINER_NAME, interceptionContainer]
      : [interceptionContainer, SIDECAR_CONTAINER_NAME];
  const status: SidecarStatus = {
    version: settings.version,
    mode,
    native: settings.nativeSidecars,
    initContainers,
    containers: settings.nativeSidecars ? [] : [SIDECAR_CONTAINER_NAME],
    volumes: volumes.map((v) => v.name),
  };
  return {
    settings,
    mode,
    volumes,
    status: JSON.stringify(status),
    defaultResources: frozenWithJson(sidecarResources(mesh, {})),
    injectedLabels: frozenWithJson({ [SIDECAR_INJECTED_LABEL]: SIDECAR_INJECTED_VALUE }),
    sidecarFirst,
    sidecarBase: deepFreeze(sidecarBase),
    sidecarTemplate: new JsonTemplate(sidecarBase, ['workloadKind', 'workloadName', 'appProbes', 'resources'] as const),
    envIndex: {
      workloadKind: envNames.indexOf('FLB_WORKLOAD_KIND'),
      workloadName: envNames.indexOf('FLB_WORKLOAD_NAME'),
      appProbes: envNames.indexOf(APP_PROBES_ENV),
    },
    interception: new Map(),
  };
}

function frozenWithJson<T extends object>(value: T): T {
  return deepFreeze(rememberJson(value));
}

/** The pod's sidecar: the mesh's template with the pod's workload, probes and resources in its holes. */
export function podSidecar(parts: MeshParts, workload: { kind: string; name: string }, appProbesJson: string, resources: Resources): V1Container {
  const { sidecarBase, envIndex } = parts;
  const env = [...sidecarBase.env!];
  env[envIndex.workloadKind] = Object.freeze({ name: 'FLB_WORKLOAD_KIND', value: workload.kind });
  env[envIndex.workloadName] = Object.freeze({ name: 'FLB_WORKLOAD_NAME', value: workload.name });
  env[envIndex.appProbes] = Object.freeze({ name: APP_PROBES_ENV, value: appProbesJson });
  Object.freeze(env);
  const container = parts.sidecarTemplate.rememberAs(
    { ...sidecarBase, env, resources },
    {
      workloadKind: JSON.stringify(workload.kind),
      workloadName: JSON.stringify(workload.name),
      appProbes: JSON.stringify(appProbesJson),
      resources: jsonText(resources),
    },
  );
  return Object.freeze(container);
}

/** The mesh's interception settings for a pod, and what applies them, built once per distinct exclusion annotations. */
export function interceptionPartsFor(parts: MeshParts, key: string, build: () => Interception): InterceptionParts {
  let found = parts.interception.get(key);
  if (!found) {
    const interception = build();
    const json = JSON.stringify(interception);
    // cni and ebpf: the privileged node agent does the work, so the pod only checks it was done.
    const init =
      interception.mode === 'iptables' ? initContainer(parts.settings.mesh, json, parts.sidecarFirst) : validationContainer(parts.settings.mesh, json);
    found = { interception, json, init: frozenWithJson(init) };
    // Bounded: a flood of pods with made-up exclusion lists must not grow the injector's memory.
    if (parts.interception.size >= 1000) parts.interception.clear();
    parts.interception.set(key, found);
  }
  return found;
}

/** The annotations map of a pod that had none: the same for every such pod with these interception settings. */
export function newAnnotations(parts: MeshParts, interception: InterceptionParts, annotations: () => Record<string, string>): Readonly<Record<string, string>> {
  return (interception.newAnnotations ??= frozenWithJson(annotations()));
}

/** The sidecar's resources from the mesh, with the pod's annotation overrides (already validated). */
export function sidecarResources(mesh: Mesh, overrides: { cpuRequest?: string; memoryRequest?: string; cpuLimit?: string; memoryLimit?: string }): Resources {
  const { requests, limits } = mesh.sidecar.resources;
  const compact = (o: Record<string, string | undefined>) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Record<string, string>;
  return {
    requests: compact({ cpu: overrides.cpuRequest ?? requests.cpu, memory: overrides.memoryRequest ?? requests.memory }),
    limits: compact({ cpu: overrides.cpuLimit ?? limits.cpu, memory: overrides.memoryLimit ?? limits.memory }),
  };
}

function fieldEnv(name: string, fieldPath: string): V1EnvVar {
  return { name, valueFrom: { fieldRef: { fieldPath } } };
}

/** `flb sidecar` (any path to flb) understands our flags; another program (a Pipy image) gets none. */
function runsFlb(command: readonly string[], ...subcommand: string[]): boolean {
  return command[0]?.split('/').pop() === 'flb' && subcommand.every((word, i) => command[i + 1] === word);
}

/**
 * The flags that make the sidecar listen where the mesh's ports say, which is where the probes,
 * the interception rules and Prometheus look. Without them it would listen on its own defaults.
 */
export function sidecarPortArgs(mesh: Mesh): string[] {
  const p = mesh.ports;
  return [
    `--admin-port=${p.admin}`,
    `--outbound-port=${p.outbound}`,
    `--inbound-port=${p.inbound}`,
    `--metrics-port=${p.metrics}`,
    `--dns-port=${p.dns}`,
    `--liveness-probe-port=${p.livenessProbe}`,
    `--readiness-probe-port=${p.readinessProbe}`,
    `--startup-probe-port=${p.startupProbe}`,
  ];
}

function sidecarContainer(settings: InjectorSettings, mode: InterceptionMode, startsFirst: boolean): V1Container {
  const { mesh } = settings;
  const hole = (name: SidecarHole) => JsonTemplate.hole(name);
  // Fresh objects each time: shared references would come out as YAML anchors in `flb inject`.
  const ready = () => ({ httpGet: { path: '/ready', port: mesh.ports.readinessProbe, scheme: 'HTTP' } });
  const args = [...(runsFlb(mesh.sidecar.command, 'sidecar') ? sidecarPortArgs(mesh) : []), ...mesh.sidecar.args];
  const https = mesh.repo.url.startsWith('https:');
  return {
    name: SIDECAR_CONTAINER_NAME,
    image: mesh.sidecar.image,
    imagePullPolicy: mesh.sidecar.imagePullPolicy,
    command: [...mesh.sidecar.command],
    ...(args.length ? { args } : {}),
    // A native sidecar starts before the app's containers and stops after them (Jobs complete).
    ...(settings.nativeSidecars ? { restartPolicy: 'Always' } : {}),
    env: [
      // The sidecar derives its id (pod.<namespace>.<name>) from these at run time: a pod made from
      // generateName has no name yet at admission.
      fieldEnv('POD_NAME', 'metadata.name'),
      fieldEnv('POD_NAMESPACE', 'metadata.namespace'),
      fieldEnv('POD_UID', 'metadata.uid'),
      fieldEnv('POD_IP', 'status.podIP'),
      fieldEnv('POD_IPS', 'status.podIPs'),
      fieldEnv('SERVICE_ACCOUNT', 'spec.serviceAccountName'),
      fieldEnv('NODE_NAME', 'spec.nodeName'),
      { name: 'FLB_WORKLOAD_KIND', value: hole('workloadKind') },
      { name: 'FLB_WORKLOAD_NAME', value: hole('workloadName') },
      { name: 'FLB_MESH', value: mesh.name },
      // The pod's mode may not be the mesh's: the sidecar's endpoint fallback follows the pod's.
      { name: INTERCEPTION_MODE_ENV, value: mode },
      { name: 'FLB_REPO_URL', value: mesh.repo.url },
      { name: 'FLB_REPO_TOKEN_FILE', value: `${REPO_DIR}/token` },
      ...(https ? [{ name: REPO_CA_FILE_ENV, value: `${REPO_DIR}/${REPO_CA_CONFIGMAP_KEY}` }] : []),
      { name: 'FLB_STATE_DIR', value: STATE_DIR },
      { name: 'FLB_LOG_LEVEL', value: mesh.sidecar.logLevel },
      { name: APP_PROBES_ENV, value: hole('appProbes') },
      ...(mesh.sidecar.nodeOptions ? [{ name: 'NODE_OPTIONS', value: mesh.sidecar.nodeOptions }] : []),
    ],
    ports: [{ name: 'flb-metrics', containerPort: mesh.ports.metrics, protocol: 'TCP' }],
    readinessProbe: { ...ready(), periodSeconds: 2, failureThreshold: 3 },
    // Started first, the sidecar is waited for by flb-init (sidecarStartsFirst): no hook, no probe.
    ...(startsFirst ? {} : holdUntilReady(settings, ready)),
    resources: hole('resources') as unknown as Resources,
    securityContext: {
      runAsUser: mesh.proxyUid,
      runAsGroup: mesh.proxyUid,
      runAsNonRoot: true,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
    },
    volumeMounts: [
      { name: REPO_VOLUME, mountPath: REPO_DIR, readOnly: true },
      { name: STATE_VOLUME, mountPath: STATE_DIR },
    ],
  };
}

/**
 * After flb-init, the sidecar itself holds the app until it is ready. Both kinds do it with the
 * postStart hook, which returns within milliseconds of /ready. A native sidecar also counts as
 * started only once its startup probe passes, and the kubelet looks at that probe only after the
 * hook: with the hook, its first look passes; without it, its first run (as the sidecar starts)
 * fails and the next is a period (1 s at least) later. Istio's native sidecar does the same.
 */
function holdUntilReady(settings: InjectorSettings, ready: () => V1Probe): Pick<V1Container, 'startupProbe' | 'lifecycle'> {
  const { mesh } = settings;
  const waitReady = mesh.sidecar.waitReadyCommand;
  return {
    ...(settings.nativeSidecars ? { startupProbe: { ...ready(), periodSeconds: 1, failureThreshold: 120 } } : {}),
    lifecycle: {
      postStart: {
        exec: {
          // The hook asks the sidecar's admin port, so it must know the mesh's.
          command:
            runsFlb(waitReady, 'sidecar', 'wait-ready') && !waitReady.some((a) => a.startsWith('--admin-port'))
              ? [...waitReady, `--admin-port=${mesh.ports.admin}`]
              : [...waitReady],
        },
      },
    },
  };
}

/** The waiter's --timeout, for flb-init to wait as long when it holds the app instead. */
function waitReadyTimeout(mesh: Mesh): string {
  const command = mesh.sidecar.waitReadyCommand;
  const i = command.findIndex((a) => a === '--timeout' || a.startsWith('--timeout='));
  if (i < 0) return '120s';
  return command[i]!.startsWith('--timeout=') ? command[i]!.slice('--timeout='.length) : (command[i + 1] ?? '120s');
}

function initContainer(mesh: Mesh, interceptionJson: string, sidecarFirst: boolean): V1Container {
  return {
    name: INIT_CONTAINER_NAME,
    image: mesh.init.image,
    imagePullPolicy: mesh.sidecar.imagePullPolicy,
    command: [...mesh.init.command],
    // The app waits for the sidecar here when the sidecar started first.
    ...(sidecarFirst ? { args: ['--wait-for-sidecar', `--sidecar-admin-port=${mesh.ports.admin}`, `--sidecar-timeout=${waitReadyTimeout(mesh)}`] } : {}),
    env: [{ name: 'FLB_INTERCEPTION', value: interceptionJson }],
    resources: { requests: { cpu: '10m', memory: '32Mi' }, limits: { memory: '128Mi' } },
    // Its error (the rules refused, the sidecar never ready) becomes the container's termination
    // message, so `kubectl describe pod` and the pod's status say why it is stuck.
    terminationMessagePolicy: 'FallbackToLogsOnError',
    // Root with NET_ADMIN and NET_RAW to write the pod's nat table, and nothing more.
    securityContext: {
      runAsUser: 0,
      runAsGroup: 0,
      runAsNonRoot: false,
      privileged: false,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { add: ['NET_ADMIN', 'NET_RAW'], drop: ['ALL'] },
    },
  };
}

/**
 * In CNI and eBPF mode the node agent set the pod up; a pod that started before the plugin was on
 * its node has nothing, nor has an eBPF pod on a node whose feature check failed, and this check
 * says so instead of letting the app run unmeshed.
 */
function validationContainer(mesh: Mesh, interceptionJson: string): V1Container {
  return {
    name: VALIDATION_CONTAINER_NAME,
    image: mesh.init.image,
    imagePullPolicy: mesh.sidecar.imagePullPolicy,
    command: ['flb', 'cni', 'validate'],
    env: [{ name: 'FLB_INTERCEPTION', value: interceptionJson }],
    resources: { requests: { cpu: '10m', memory: '32Mi' }, limits: { memory: '128Mi' } },
    // Its reason (not redirected; eBPF missing on node N and why) stays in the pod's status as the
    // termination message, where the node agent's Events expire after an hour.
    terminationMessagePolicy: 'FallbackToLogsOnError',
    // Any UID but the proxy's, or its test connection would not be redirected; no privilege at all.
    securityContext: {
      runAsUser: mesh.proxyUid + 1,
      runAsGroup: mesh.proxyUid + 1,
      runAsNonRoot: true,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
    },
  };
}

/**
 * The repo token (a projected ServiceAccount token for the repo's audience) and, for an HTTPS repo,
 * its CA from the ConfigMap the control plane keeps in every injected namespace, in one projected
 * volume, as Kubernetes hands out its own token and CA (kube-api-access-*). The ConfigMap is not
 * optional: without the CA the sidecar cannot trust the repo and would never get its
 * configuration, so the kubelet's own refusal (the pod stays in ContainerCreating with a
 * FailedMount Event naming the ConfigMap, and starts once it exists) is the honest failure, where
 * an optional one would start a sidecar that can only fail later, further from the cause.
 */
function sidecarVolumes(mesh: Mesh): V1Volume[] {
  const https = mesh.repo.url.startsWith('https:');
  return [
    {
      name: REPO_VOLUME,
      projected: {
        sources: [
          { serviceAccountToken: { audience: mesh.repo.tokenAudience, expirationSeconds: 3600, path: 'token' } },
          ...(https ? [{ configMap: { name: REPO_CA_CONFIGMAP, items: [{ key: REPO_CA_CONFIGMAP_KEY, path: REPO_CA_CONFIGMAP_KEY }] } }] : []),
        ],
      },
    },
    { name: STATE_VOLUME, emptyDir: {} },
  ];
}
