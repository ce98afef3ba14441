// `flb inject`: the same injection, offline, on manifests (multi-document YAML or JSON, Lists, Pods
// and workloads with pod templates). Documents that are not workloads pass through unchanged.
import type { V1Namespace, V1Pod } from '@kubernetes/client-node';
import jsonpatch from 'fast-json-patch';
import YAML from 'yaml';
import { injectPod, type InjectionResult, type InjectorSettings } from './inject.js';

/**
 * Where the pod template sits in each kind `flb inject` understands, and the API groups the kind
 * belongs to: a custom resource that happens to be called Deployment is not one. The built-in
 * kinds, and Argo Rollouts, whose pods come from spec.template as a Deployment's do.
 */
const WORKLOADS: Record<string, { groups: string[]; template: string[] }> = {
  Deployment: { groups: ['apps', 'extensions'], template: ['spec', 'template'] },
  StatefulSet: { groups: ['apps'], template: ['spec', 'template'] },
  DaemonSet: { groups: ['apps', 'extensions'], template: ['spec', 'template'] },
  ReplicaSet: { groups: ['apps', 'extensions'], template: ['spec', 'template'] },
  ReplicationController: { groups: [''], template: ['spec', 'template'] },
  PodTemplate: { groups: [''], template: ['template'] },
  Job: { groups: ['batch'], template: ['spec', 'template'] },
  CronJob: { groups: ['batch'], template: ['spec', 'jobTemplate', 'spec', 'template'] },
  Rollout: { groups: ['argoproj.io'], template: ['spec', 'template'] },
};

export interface ManifestVerdict {
  /** e.g. "Deployment shop/orders" */
  workload: string;
  result: InjectionResult | { action: 'ignore'; message: string };
}

export interface InjectedManifests {
  yaml: string;
  verdicts: ManifestVerdict[];
}

type K8sObject = { apiVersion?: string; kind?: string; metadata?: { name?: string; namespace?: string }; items?: K8sObject[] } & Record<string, unknown>;

/** `source` names the input in errors: a file name, or "standard input". */
export function injectManifests(
  text: string,
  settings: InjectorSettings,
  namespaceFor: (name: string) => V1Namespace,
  source = 'the input',
): InjectedManifests {
  const documents = YAML.parseAllDocuments(text);
  const verdicts: ManifestVerdict[] = [];
  const out: string[] = [];
  for (const doc of documents) {
    if (doc.errors.length > 0) throw new Error(`${source} is not valid YAML or JSON: ${doc.errors[0]!.message}`);
    const value = doc.toJS() as K8sObject | null;
    if (value === null || value === undefined) continue;
    out.push(YAML.stringify(injectObject(value, settings, namespaceFor, verdicts), { lineWidth: 0 }));
  }
  return { yaml: out.join('---\n'), verdicts };
}

function injectObject(object: K8sObject, settings: InjectorSettings, namespaceFor: (name: string) => V1Namespace, verdicts: ManifestVerdict[]): K8sObject {
  if (typeof object !== 'object' || Array.isArray(object)) return object;
  if (object.kind?.endsWith('List') && Array.isArray(object.items)) {
    return { ...object, items: object.items.map((item) => injectObject(item, settings, namespaceFor, verdicts)) };
  }
  const kind = object.kind ?? '(no kind)';
  const namespace = object.metadata?.namespace ?? 'default';
  const workload = `${kind} ${namespace}/${object.metadata?.name ?? '(no name)'}`;
  // The group of apiVersion "apps/v1" is "apps"; of "v1", the core group "".
  const group = object.apiVersion?.includes('/') ? object.apiVersion.slice(0, object.apiVersion.indexOf('/')) : '';
  if (kind === 'Pod' && group === '') {
    const pod = object as V1Pod;
    const result = injectPod({ ...pod, metadata: { ...pod.metadata, namespace } }, namespaceFor(namespace), settings);
    verdicts.push({ workload, result });
    return result.action === 'inject' ? applied(object, result) : object;
  }
  const known = WORKLOADS[kind];
  if (!known || (object.apiVersion !== undefined && !known.groups.includes(group))) {
    const what = known
      ? `${object.apiVersion} ${kind} is not the ${kind} of ${known.groups.filter(Boolean).join(' or ') || 'the core API'}`
      : `${kind} has no pod template`;
    verdicts.push({ workload, result: { action: 'ignore', message: what } });
    return object;
  }
  const path = known.template;
  const copy = structuredClone(object);
  let parent: Record<string, unknown> = copy;
  for (const key of path.slice(0, -1)) parent = (parent[key] ?? {}) as Record<string, unknown>;
  const template = parent[path[path.length - 1]!] as V1Pod | undefined;
  if (!template) {
    // An Argo Rollout may point at a Deployment's template instead of carrying one.
    const reference = kind === 'Rollout' && (object.spec as { workloadRef?: { name?: string } } | undefined)?.workloadRef;
    const message = reference
      ? `Rollout has no spec.template: it uses the pod template of ${JSON.stringify(reference.name ?? '')} (spec.workloadRef); inject that workload`
      : `${kind} has no ${path.join('.')}`;
    verdicts.push({ workload, result: { action: 'ignore', message } });
    return object;
  }
  const pod: V1Pod = { ...template, metadata: { ...template.metadata, namespace } };
  const result = injectPod(pod, namespaceFor(namespace), settings, { kind, name: String(object.metadata?.name ?? '') });
  verdicts.push({ workload, result });
  if (result.action !== 'inject') return object;
  const injected = applied(pod, result);
  // The namespace was only needed for the decision; a template does not carry one.
  if (template.metadata?.namespace === undefined) delete injected.metadata?.namespace;
  parent[path[path.length - 1]!] = injected;
  return copy;
}

/**
 * The patched object, sharing nothing with the patch: its values are shared between pods (the same
 * object twice in one document would come out as a YAML anchor) and frozen.
 */
function applied<T>(object: T, result: Extract<InjectionResult, { action: 'inject' }>): T {
  return jsonpatch.applyPatch(structuredClone(object), structuredClone(result.patch), true, false).newDocument;
}

export function explain(verdicts: ManifestVerdict[]): string {
  return verdicts
    .map(({ workload, result }) => {
      const warnings = 'warnings' in result ? result.warnings.map((w) => `\n  warning: ${w}`).join('') : '';
      switch (result.action) {
        case 'inject':
          return `${workload}: inject (${result.because})${warnings}`;
        case 'skip':
          return `${workload}: skip, ${result.reason} (${result.message})${warnings}`;
        case 'deny':
          return `${workload}: refused: ${result.message}`;
        case 'ignore':
          return `${workload}: ignored (${result.message})`;
      }
    })
    .join('\n');
}

/** The warnings of each workload, one line each, for stderr: `Deployment shop/orders: warning: ...`. */
export function warningLines(verdicts: ManifestVerdict[]): string[] {
  return verdicts.flatMap(({ workload, result }) => ('warnings' in result ? result.warnings.map((w) => `${workload}: warning: ${w}`) : []));
}

/** What to fix, for the error that ends `flb inject` when a workload would be refused. */
export function refusalHint(verdicts: ManifestVerdict[]): string {
  const invalid = verdicts.flatMap(({ result }) => (result.action === 'deny' ? result.invalid : []));
  const count = (kind: string) => new Set(invalid.filter((i) => i.kind === kind).map((i) => i.key)).size;
  const what = [
    ['label', count('label')],
    ['annotation', count('annotation')],
  ]
    .filter(([, n]) => n)
    .map(([kind, n]) => `pod ${kind}${n === 1 ? '' : 's'}`)
    .join(' and ');
  return what ? `fix the ${what} named above` : 'see the reasons above';
}
