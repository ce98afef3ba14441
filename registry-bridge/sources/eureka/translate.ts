// A Eureka application into one catalog service: the instances with a published status become
// endpoints at their IP and enabled port, the app's DNS label and catalog id its hostnames. Pure,
// so each rule is tested without a server; a bad instance is left out and named, never the app.
import { isIP } from 'node:net';
import { API_VERSION, ServicePolicySchema, serviceId, type Endpoint, type EurekaSourceConfig, type Service } from '../../../common/contract/index.js';
import { ORIGIN_LABEL } from '../kubernetes/translate.js';
import { ORIGIN_METADATA, type EurekaInstance } from './registry.js';

export { ORIGIN_METADATA };

/** The app's name in Eureka, on the catalog service (its `name` is the same; this survives a rename of the label rules). */
export const EUREKA_APP_LABEL = 'flomesh.io/eureka-app';

const DEFAULT_POLICY = ServicePolicySchema.parse({});

export interface AppTranslation {
  service?: Service;
  /** Why there is no service (no instance left). */
  skipped?: string;
  /** Instances left out, each named with why. */
  problems: string[];
}

export type TranslateOptions = Pick<EurekaSourceConfig, 'statuses' | 'servicePort' | 'protocol' | 'preferSecurePort'> &
  Partial<Pick<EurekaSourceConfig, 'directDial'>> & {
    /** The registry's name in ids. */
    registry: string;
  };

const validPort = (p: EurekaInstance['port']): p is NonNullable<EurekaInstance['port']> =>
  p !== undefined && p.enabled && Number.isInteger(p.number) && p.number >= 1 && p.number <= 65535;

/** An instance's address: its ipAddr, else a hostName that is an IP (old clients register one). */
function addressOf(instance: EurekaInstance): string | undefined {
  if (instance.ipAddr !== undefined && isIP(instance.ipAddr)) return instance.ipAddr;
  if (instance.hostName !== undefined && isIP(instance.hostName)) return instance.hostName;
  return undefined;
}

/**
 * The catalog service of app `app` (Eureka's upper-case name) whose DNS label is `label`.
 *
 * Ports: an instance is reached on its `port` when enabled, else on its `securePort`
 * (`preferSecurePort` turns that round). An app is reached one way for all its instances, the way
 * the first rule gives for any of them: plain, the service answers on `servicePort` with
 * `protocol`; secure, on 443 as `tcp`, since the app speaks TLS itself and the sidecar only
 * forwards. Instances that cannot be reached that way are left out, and named.
 */
export function translateApp(app: string, label: string, instances: Iterable<EurekaInstance>, options: TranslateOptions): AppTranslation {
  const problems: string[] = [];
  const statuses = new Set<string>(options.statuses);
  const published: { instance: EurekaInstance; address: string }[] = [];
  let any = false;
  for (const instance of instances) {
    // Written by a bridge's Eureka sink: it is another source's service already (loop prevention).
    if (instance.origin !== undefined) continue;
    any = true;
    if (!statuses.has(instance.status)) continue;
    const address = addressOf(instance);
    if (address === undefined) {
      problems.push(
        `instance ${instance.id} of ${app}: no IP address (ipAddr ${JSON.stringify(instance.ipAddr ?? null)}, hostName ${JSON.stringify(instance.hostName ?? null)}); left out`,
      );
      continue;
    }
    for (const [which, port] of [
      ['port', instance.port],
      ['securePort', instance.securePort],
    ] as const) {
      if (port !== undefined && port.enabled && !(port.number >= 1 && port.number <= 65535))
        problems.push(`instance ${instance.id} of ${app}: ${which} ${port.number} is no port number (1-65535)`);
    }
    published.push({ instance, address });
  }
  if (!any) return { skipped: `no instance of ${app} is registered`, problems };

  const plain = published.some(({ instance }) => validPort(instance.port));
  const secure = published.some(({ instance }) => validPort(instance.securePort));
  const useSecure = options.preferSecurePort ? secure : secure && !plain;
  const byAddress = new Map<string, Endpoint>();
  for (const { instance, address } of published.sort((a, b) => (a.instance.id < b.instance.id ? -1 : a.instance.id > b.instance.id ? 1 : 0))) {
    const port = useSecure ? instance.securePort : instance.port;
    if (!validPort(port)) {
      problems.push(
        `instance ${instance.id} of ${app}: no enabled ${useSecure ? 'securePort' : 'port'}, and ${app} is reached on its ${useSecure ? 'secure ports' : 'plain ports'}; left out`,
      );
      continue;
    }
    const key = `${address}|${port.number}`;
    const seen = byAddress.get(key);
    const healthy = instance.status === 'UP';
    // One process registered twice (a restart under a new instanceId before the old lease ends): one endpoint, healthy if either is.
    if (seen) {
      if (healthy && !seen.healthy) seen.healthy = true;
      continue;
    }
    byAddress.set(key, {
      address,
      port: port.number,
      weight: 1,
      priority: 0,
      healthy,
      ...(instance.zone !== undefined ? { zone: instance.zone } : {}),
      metadata: { instanceId: instance.id, status: instance.status },
    });
  }
  const endpoints = [...byAddress.values()].sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : a.port - b.port));
  const id = serviceId({ source: 'eureka', name: label, registry: options.registry });
  const service: Service = {
    apiVersion: API_VERSION,
    kind: 'Service',
    id,
    name: app,
    registry: options.registry,
    source: 'eureka',
    hostnames: [label, id],
    vips: [],
    ports: [useSecure ? { name: 'https', port: 443, protocol: 'tcp' } : { name: options.protocol, port: options.servicePort, protocol: options.protocol }],
    endpoints,
    policy: DEFAULT_POLICY,
    ...(options.directDial !== undefined && options.directDial !== 'off' ? { directDial: options.directDial } : {}),
    labels: { [ORIGIN_LABEL]: 'eureka', [EUREKA_APP_LABEL]: app },
  };
  return { service, problems };
}
