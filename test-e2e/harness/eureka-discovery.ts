// What an app with a Eureka client sees of a registry: eureka-js-client set up as a Spring Cloud
// app that only discovers (registers nothing, fetches the whole registry every half second, hands
// out UP instances only). The sink tests compare what the bridge wrote with what such a client
// discovers, not only with what the server holds.
import eurekaModule, { type EurekaClient } from 'eureka-js-client';
import type { EurekaServer } from './eureka.js';

export type DiscoveredInstance = EurekaClient.EurekaInstanceConfig;

export interface DiscoveryClient {
  /** `hostName:port` of each instance of the app the client hands out, sorted. */
  discovered(app: string): string[];
  /** The app's instances as the client hands them out (Eureka's JSON: `port` is `{ $, '@enabled' }`). */
  instances(app: string): DiscoveredInstance[];
  /** The instances the client hands out for a vipAddress (how Spring's load balancer asks). */
  instancesByVip(vipAddress: string): DiscoveredInstance[];
  stop(): void;
}

const quiet = { warn() {}, info() {}, debug() {}, error() {} };

function portOf(instance: DiscoveredInstance): number | undefined {
  const port = instance.port;
  if (typeof port === 'number' || port === undefined) return port;
  return '$' in port ? port.$ : port.port;
}

/** Starts the client against the server and resolves once its first full fetch is in. */
export async function startDiscoveryClient(server: Pick<EurekaServer, 'port'>, fetchIntervalMs = 500): Promise<DiscoveryClient> {
  // Its typings want an instance to register; a client with registerWithEureka false never reads one.
  const client = new eurekaModule.Eureka({
    logger: quiet,
    shouldUseDelta: false,
    eureka: {
      host: '127.0.0.1',
      port: server.port,
      servicePath: '/eureka/apps/',
      registerWithEureka: false,
      fetchRegistry: true,
      registryFetchInterval: fetchIntervalMs,
    },
  } as unknown as ConstructorParameters<typeof eurekaModule.Eureka>[0]);
  try {
    await new Promise<void>((resolve, reject) => client.start((error: unknown) => (error ? reject(error as Error) : resolve())));
  } catch (error) {
    client.stop();
    throw new Error(`the Eureka discovery client could not fetch the registry from 127.0.0.1:${server.port}: ${(error as Error).message}`, {
      cause: error,
    });
  }
  return {
    discovered: (app) =>
      client
        .getInstancesByAppId(app)
        .map((i) => `${i.hostName}:${portOf(i)}`)
        .sort(),
    instances: (app) => client.getInstancesByAppId(app),
    instancesByVip: (vipAddress) => client.getInstancesByVipAddress(vipAddress),
    stop: () => client.stop(),
  };
}
