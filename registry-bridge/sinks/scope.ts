// Which catalog services a registry sink writes, and the origin every sink marks its writes with.
// Shared by the Consul, Eureka and Kubernetes sinks so direction and scope read the same everywhere
// (registry-bridge/README.md, Sinks).
import type { ConsulSinkConfig, EurekaSinkConfig, KubernetesSinkConfig, Service, SourceConfig } from '../../common/contract/index.js';

import { REGISTRY_SYNC_ANNOTATION } from '../sources/kubernetes/translate.js';

/** The catalog label the Kubernetes source copies the per-Service opt-in/opt-out annotation into. */
export const REGISTRY_SYNC_LABEL = REGISTRY_SYNC_ANNOTATION;

export type SinkScope =
  | Pick<ConsulSinkConfig, 'kind' | 'from' | 'namespaces' | 'exportByDefault'>
  | Pick<EurekaSinkConfig, 'kind' | 'from' | 'namespaces' | 'exportByDefault'>
  | (Pick<KubernetesSinkConfig, 'kind' | 'from'> & { namespaces?: undefined; exportByDefault?: undefined });

/** The source names a sink takes from: its `from`, else the default for its kind (Kubernetes into registries, registries into Kubernetes). */
export function sourcesOf(sink: SinkScope, sources: readonly Pick<SourceConfig, 'name' | 'kind'>[]): Set<string> {
  if (sink.from) return new Set(sink.from);
  const wanted = sink.kind === 'kubernetes' ? ['consul', 'eureka'] : ['kubernetes'];
  return new Set(sources.filter((s) => wanted.includes(s.kind)).map((s) => s.name));
}

/** Whether `sink` writes `service`, which source `source` reported. */
export function inScope(sink: SinkScope, from: ReadonlySet<string>, source: string | undefined, service: Service): boolean {
  if (source === undefined || !from.has(source)) return false;
  if (service.source !== 'kubernetes' || !sink.namespaces) return true;
  const namespace = service.namespace ?? '';
  const { include, exclude } = sink.namespaces;
  if (!(include.includes('*') || include.includes(namespace)) || exclude.includes(namespace)) return false;
  const annotated = service.labels[REGISTRY_SYNC_LABEL];
  if (annotated === 'true') return true;
  if (annotated === 'false') return false;
  return sink.exportByDefault ?? true;
}
