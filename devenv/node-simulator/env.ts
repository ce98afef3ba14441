// A container's environment as the kubelet builds it: the spec's `env` in order with $(VAR)
// references expanded, downward API fields, ConfigMap and Secret keys, `envFrom`, and the variables
// every container gets (KUBERNETES_SERVICE_HOST/PORT, HOSTNAME). Pure: what it needs from the API
// comes in `sources`.
import type { V1Container, V1EnvVar, V1Pod } from '@kubernetes/client-node';

export interface EnvSources {
  configMap(name: string): Record<string, string> | undefined;
  secret(name: string): Record<string, string> | undefined;
  /** Where in-cluster clients reach the apiserver. */
  apiserver: { host: string; port: number };
  nodeIp: string;
  /** The node's allocatable resources, for resourceFieldRef of a container without limits. */
  allocatable: { cpu: string; memory: string };
}

export class EnvError extends Error {
  override name = 'EnvError';
}

const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** `$(VAR)` expands to a variable defined before it; `$$(VAR)` is a literal; unknown ones stay as written. */
export function expandReferences(value: string, defined: ReadonlyMap<string, string>): string {
  return value.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (match, name: string | undefined) => {
    if (match === '$$') return '$';
    return name !== undefined && defined.has(name) ? defined.get(name)! : match;
  });
}

export function fieldValue(pod: V1Pod, fieldPath: string, nodeIp: string): string {
  const annotated = /^metadata\.(labels|annotations)\['(.+)'\]$/.exec(fieldPath);
  if (annotated) return pod.metadata?.[annotated[1] as 'labels' | 'annotations']?.[annotated[2]!] ?? '';
  switch (fieldPath) {
    case 'metadata.name':
      return pod.metadata?.name ?? '';
    case 'metadata.namespace':
      return pod.metadata?.namespace ?? '';
    case 'metadata.uid':
      return pod.metadata?.uid ?? '';
    case 'spec.nodeName':
      return pod.spec?.nodeName ?? '';
    case 'spec.serviceAccountName':
      return pod.spec?.serviceAccountName ?? 'default';
    case 'status.hostIP':
    case 'status.hostIPs':
      return nodeIp;
    case 'status.podIP':
      return pod.status?.podIP ?? '';
    case 'status.podIPs':
      return (pod.status?.podIPs ?? []).map((p) => p.ip).join(',');
    default:
      throw new EnvError(`unsupported downward API field ${fieldPath}`);
  }
}

function resourceValue(container: V1Container, resource: string, divisor: string | undefined, sources: EnvSources): string {
  const [kind, name] = resource.split('.') as ['limits' | 'requests', 'cpu' | 'memory' | 'ephemeral-storage'];
  const raw = container.resources?.[kind]?.[name] ?? (name === 'cpu' ? sources.allocatable.cpu : sources.allocatable.memory);
  if (name === 'cpu') {
    const cores = raw.endsWith('m') ? Number(raw.slice(0, -1)) / 1000 : Number(raw);
    const per = divisor ? (divisor.endsWith('m') ? Number(divisor.slice(0, -1)) / 1000 : Number(divisor)) : 1;
    return String(Math.ceil(cores / per));
  }
  return String(Math.ceil(quantityBytes(raw) / (divisor ? quantityBytes(divisor) : 1)));
}

export function quantityBytes(quantity: string): number {
  const match = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(quantity);
  if (!match) throw new EnvError(`not a resource quantity: ${quantity}`);
  const scale: Record<string, number> = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, k: 1e3, M: 1e6, G: 1e9, T: 1e12 };
  return Number(match[1]) * (match[2] ? scale[match[2]]! : 1);
}

function fromSource(
  kind: 'ConfigMap' | 'Secret',
  name: string,
  key: string | undefined,
  optional: boolean | undefined,
  sources: EnvSources,
): string | undefined {
  const data = kind === 'ConfigMap' ? sources.configMap(name) : sources.secret(name);
  if (!data) {
    if (optional) return undefined;
    throw new EnvError(`${kind.toLowerCase()} "${name}" not found`);
  }
  if (key === undefined) return undefined;
  if (!(key in data)) {
    if (optional) return undefined;
    throw new EnvError(`couldn't find key ${key} in ${kind} ${name}`);
  }
  return data[key];
}

/** The container's environment, in the kubelet's order: defaults, envFrom, then env (later wins). */
export function containerEnv(pod: V1Pod, container: V1Container, sources: EnvSources): Record<string, string> {
  const defined = new Map<string, string>();
  const { host, port } = sources.apiserver;
  for (const [name, value] of Object.entries({
    PATH: DEFAULT_PATH,
    HOSTNAME: pod.metadata?.name ?? '',
    KUBERNETES_SERVICE_HOST: host,
    KUBERNETES_SERVICE_PORT: String(port),
    KUBERNETES_SERVICE_PORT_HTTPS: String(port),
    KUBERNETES_PORT: `tcp://${host}:${port}`,
    KUBERNETES_PORT_443_TCP: `tcp://${host}:${port}`,
    KUBERNETES_PORT_443_TCP_PROTO: 'tcp',
    KUBERNETES_PORT_443_TCP_PORT: String(port),
    KUBERNETES_PORT_443_TCP_ADDR: host,
  })) {
    defined.set(name, value);
  }
  for (const from of container.envFrom ?? []) {
    const kind = from.configMapRef ? 'ConfigMap' : 'Secret';
    const ref = from.configMapRef ?? from.secretRef;
    if (!ref?.name) continue;
    const data = kind === 'ConfigMap' ? sources.configMap(ref.name) : sources.secret(ref.name);
    if (!data) {
      if (ref.optional) continue;
      throw new EnvError(`${kind.toLowerCase()} "${ref.name}" not found`);
    }
    for (const [key, value] of Object.entries(data)) defined.set((from.prefix ?? '') + key, value);
  }
  for (const variable of container.env ?? []) {
    const value = envValue(pod, container, variable, defined, sources);
    if (value !== undefined) defined.set(variable.name, value);
  }
  return Object.fromEntries(defined);
}

function envValue(pod: V1Pod, container: V1Container, variable: V1EnvVar, defined: ReadonlyMap<string, string>, sources: EnvSources): string | undefined {
  if (!variable.valueFrom) return expandReferences(variable.value ?? '', defined);
  const from = variable.valueFrom;
  if (from.fieldRef) return fieldValue(pod, from.fieldRef.fieldPath, sources.nodeIp);
  if (from.resourceFieldRef) {
    const target = from.resourceFieldRef.containerName
      ? (pod.spec?.containers.find((c) => c.name === from.resourceFieldRef!.containerName) ?? container)
      : container;
    return resourceValue(target, from.resourceFieldRef.resource, from.resourceFieldRef.divisor as string | undefined, sources);
  }
  if (from.configMapKeyRef) return fromSource('ConfigMap', from.configMapKeyRef.name!, from.configMapKeyRef.key, from.configMapKeyRef.optional, sources);
  if (from.secretKeyRef) return fromSource('Secret', from.secretKeyRef.name!, from.secretKeyRef.key, from.secretKeyRef.optional, sources);
  throw new EnvError(`env ${variable.name}: unsupported valueFrom ${Object.keys(from).join(', ')}`);
}

/**
 * HOME as the container runtime sets it when the spec does not (runc): the user's home in the
 * passwd file, else "/". Without it Node's os.homedir() throws for a UID with no passwd entry
 * (the chart's control plane runs as 65532), which a real container never sees.
 */
export function homeDirectory(uid: number, passwd: string): string {
  for (const line of passwd.split('\n')) {
    const fields = line.split(':');
    if (fields.length >= 6 && Number(fields[2]) === uid && fields[2] !== '') return fields[5] || '/';
  }
  return '/';
}
