/**
 * Sidecar ids and repo codebases (see README.md in this folder for the lifecycle).
 *
 * A pod made from generateName has no name when the injector sees it, so the id cannot be
 * fixed at admission: the sidecar derives it at run time from the downward API (POD_NAMESPACE,
 * POD_NAME). VMs get theirs at install. Namespaces are DNS labels (no dots), so `pod.<ns>.<name>`
 * splits unambiguously even though pod names may hold dots.
 */
export const SIDECAR_ID_PATTERN = /^(pod\.[a-z0-9]([-a-z0-9]*[a-z0-9])?\.[a-z0-9]([-a-z0-9.]*[a-z0-9])?|vm\.[a-z0-9]([-a-z0-9.]*[a-z0-9])?)$/;

export const MESH_CODEBASE = '/flb/mesh';
export const SIDECARS_CODEBASE_PREFIX = '/flb/sidecars/';

export type SidecarIdentity = { kind: 'pod'; namespace: string; name: string } | { kind: 'vm'; name: string };

export function sidecarId(identity: SidecarIdentity): string {
  return identity.kind === 'pod' ? `pod.${identity.namespace}.${identity.name}` : `vm.${identity.name}`;
}

export function parseSidecarId(id: string): SidecarIdentity {
  if (!SIDECAR_ID_PATTERN.test(id)) throw new Error(`not a sidecar id: ${JSON.stringify(id)} (expected pod.<namespace>.<name> or vm.<name>)`);
  if (id.startsWith('vm.')) return { kind: 'vm', name: id.slice(3) };
  const rest = id.slice(4);
  const dot = rest.indexOf('.');
  return { kind: 'pod', namespace: rest.slice(0, dot), name: rest.slice(dot + 1) };
}

export function sidecarCodebase(id: string): string {
  return `${SIDECARS_CODEBASE_PREFIX}${id}`;
}

/**
 * How a running sidecar learns its id: FLB_SIDECAR_ID when set (VMs, tests), otherwise from the
 * downward API variables the injector adds to the sidecar container.
 */
export function sidecarIdFromEnv(env: NodeJS.ProcessEnv = process.env): string {
  if (env.FLB_SIDECAR_ID) {
    parseSidecarId(env.FLB_SIDECAR_ID);
    return env.FLB_SIDECAR_ID;
  }
  const namespace = env.POD_NAMESPACE;
  const name = env.POD_NAME;
  if (!namespace || !name) {
    throw new Error('cannot tell which sidecar this is: set FLB_SIDECAR_ID, or POD_NAMESPACE and POD_NAME from the downward API');
  }
  return sidecarId({ kind: 'pod', namespace, name });
}
