import type { V1Namespace, V1Pod } from '@kubernetes/client-node';
import jsonpatch from 'fast-json-patch';
import YAML from 'yaml';
import { injectPod, type InjectionResult, type InjectorSettings } from './inject.js';

/** Where the pod template sits in each workload kind `flb inject` understands. */
const TEMPLATE_PATHS: Record<string, string[]> = {
  Deployment: ['spec', 'template'],
  StatefulSet: ['spec', 'template'],
  DaemonSet: ['spec', 'template'],
  ReplicaSet: ['spec', 'template'],
  ReplicationController: ['spec', 'template'],
  Job: ['spec', 'template'],
  CronJob: ['spec', 'jobTemplate', 'spec', 'template'],
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

/**
 * `flb inject`: the same injection, offline, on manifests (multi-document YAML, Lists, Pods and
 * workloads with pod templates). Documents that are not workloads pass through unchanged.
 */
export function injectManifests(text: string, settings: InjectorSettings, namespaceFor: (name: string) => V1Namespace): InjectedManifests {
  const documents = YAML.parseAllDocuments(text);
  const verdicts: ManifestVerdict[] = [];
  const out: string[] = [];
  for (const doc of documents) {
    if (doc.errors.length > 0) throw new Error(`the input is not valid YAML: ${doc.errors[0]!.message}`);
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
  if (kind === 'Pod') {
    const pod = object as V1Pod;
    const result = injectPod({ ...pod, metadata: { ...pod.metadata, namespace } }, namespaceFor(namespace), settings);
    verdicts.push({ workload, result });
    return result.action === 'inject' ? (jsonpatch.applyPatch(structuredClone(object), result.patch, true, false).newDocument as K8sObject) : object;
  }
  const path = TEMPLATE_PATHS[kind];
  if (!path) {
    verdicts.push({ workload, result: { action: 'ignore', message: `${kind} has no pod template` } });
    return object;
  }
  const copy = structuredClone(object);
  let parent: Record<string, unknown> = copy;
  for (const key of path.slice(0, -1)) parent = (parent[key] ?? {}) as Record<string, unknown>;
  const template = parent[path[path.length - 1]!] as V1Pod | undefined;
  if (!template) {
    verdicts.push({ workload, result: { action: 'ignore', message: `${kind} has no ${path.join('.')}` } });
    return object;
  }
  const pod: V1Pod = { ...template, metadata: { ...template.metadata, namespace } };
  const result = injectPod(pod, namespaceFor(namespace), settings, { kind, name: object.metadata?.name ?? '' });
  verdicts.push({ workload, result });
  if (result.action !== 'inject') return object;
  const injected = jsonpatch.applyPatch(structuredClone(pod), result.patch, true, false).newDocument;
  // The namespace was only needed for the decision; a template does not carry one.
  if (template.metadata?.namespace === undefined) delete injected.metadata?.namespace;
  parent[path[path.length - 1]!] = injected;
  return copy;
}

export function explain(verdicts: ManifestVerdict[]): string {
  return verdicts
    .map(({ workload, result }) => {
      switch (result.action) {
        case 'inject':
          return `${workload}: inject (${result.because})${result.warnings.map((w) => `\n  warning: ${w}`).join('')}`;
        case 'skip':
          return `${workload}: skip, ${result.reason} (${result.message})`;
        case 'deny':
          return `${workload}: refused: ${result.message}`;
        case 'ignore':
          return `${workload}: ignored (${result.message})`;
      }
    })
    .join('\n');
}
