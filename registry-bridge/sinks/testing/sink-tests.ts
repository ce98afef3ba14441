// What the registry sinks' unit tests share: their configuration parsed as a user's BridgeConfig
// is, the Kubernetes Services they are told, sinks stopped after each test, and a bounded wait.
import { afterEach } from '@jest/globals';
import { API_VERSION, BridgeConfigSchema, ServiceSchema, type Service, type SinkConfig, type SourceConfig } from '../../../common/contract/index.js';

/**
 * A sink's configuration as the bridge parses it, beside a Kubernetes source and `registrySource`,
 * and the sources as the sink is given them (the checks of `from` need them).
 */
export function parseSinkConfig<T extends SinkConfig>(
  registrySource: Record<string, unknown>,
  sink: Record<string, unknown>,
): { config: T; sources: Pick<SourceConfig, 'name' | 'kind'>[] } {
  const parsed = BridgeConfigSchema.parse({
    apiVersion: API_VERSION,
    kind: 'BridgeConfig',
    mesh: { file: '/x' },
    sources: [{ kind: 'kubernetes' }, registrySource],
    sinks: [sink],
  });
  return { config: parsed.sinks[0] as T, sources: parsed.sources.map(({ name, kind }) => ({ name, kind })) };
}

/** A Service of the Kubernetes source: `endpoints` as [pod IP, ready], each on port 8080. */
export function kubeService(
  name: string,
  namespace: string,
  endpoints: [string, boolean][],
  options: { labels?: Record<string, string>; port?: { name?: string; port: number }; zone?: string } = {},
): Service {
  return ServiceSchema.parse({
    apiVersion: API_VERSION,
    kind: 'Service',
    id: `${name}.${namespace}`,
    name,
    namespace,
    source: 'kubernetes',
    hostnames: [],
    vips: [],
    ports: [{ ...(options.port ?? { port: 80 }), protocol: 'http' }],
    endpoints: endpoints.map(([address, healthy]) => ({
      address,
      port: 8080,
      weight: 1,
      priority: 0,
      healthy,
      ...(options.zone ? { zone: options.zone } : {}),
      metadata: {},
    })),
    labels: { 'flomesh.io/origin': 'kubernetes', ...options.labels },
  });
}

/** The array a test file pushes its sinks to: each is stopped after every test. */
export function stoppedAfterEach<T extends { stop(): Promise<void> }>(): T[] {
  const running: T[] = [];
  afterEach(async () => {
    for (const sink of running.splice(0)) await sink.stop();
  });
  return running;
}

/** settled() does not wait for writes that failed (they are retried with backoff): this does, up to a bound. */
export async function until(what: string, ok: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
