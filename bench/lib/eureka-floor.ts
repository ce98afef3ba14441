// The Eureka floor of bench/registry.ts: eureka-js-client, as a Node app holding the registry would
// run it (a full fetch, then /apps/delta every `intervalMs`; registers nothing), in its own process.
// After each fetch it prints `mark <n> <epoch ms>` for every UP instance `mark-<n>` new in its
// cache; `ready` after its first full fetch.
import eurekaModule from 'eureka-js-client';

const options = JSON.parse(process.argv[2]!) as { host: string; port: number; intervalMs: number };
const now = () => performance.timeOrigin + performance.now();
const seen = new Set<string>();
const quiet = { warn() {}, info() {}, debug() {}, error: (...args: unknown[]) => process.stderr.write(`eureka-floor: ${args.map(String).join(' ')}\n`) };

const client = new eurekaModule.Eureka({
  logger: quiet as never,
  shouldUseDelta: true,
  eureka: {
    host: options.host,
    port: options.port,
    servicePath: '/eureka/apps/',
    registerWithEureka: false,
    fetchRegistry: true,
    registryFetchInterval: options.intervalMs,
    maxRetries: 0,
  },
} as never);

// Its cache after each fetch (full or delta): the only hook it offers is 'registryUpdated', which a
// delta never emits. fetchRegistry and cache are not in its typings; its interval calls them on the instance.
const internals = client as unknown as {
  fetchRegistry: (callback?: (error?: Error) => void) => void;
  cache: { app: Record<string, { instanceId?: string }[]> };
};
const fetchRegistry = internals.fetchRegistry.bind(client);
internals.fetchRegistry = (callback?: (error?: Error) => void) =>
  fetchRegistry((error?: Error) => {
    const at = now();
    const cache = internals.cache;
    for (const instances of Object.values(cache.app)) {
      for (const instance of instances) {
        const mark = /^mark-(\d+)$/.exec(instance.instanceId ?? '')?.[1];
        if (mark === undefined || seen.has(mark)) continue;
        seen.add(mark);
        process.stdout.write(`mark ${mark} ${at.toFixed(3)}\n`);
      }
    }
    callback?.(error);
  });

client.start((error: unknown) => {
  if (error) {
    process.stderr.write(`eureka-floor: ${String(error)}\n`);
    process.exit(1);
  }
  process.stdout.write('ready\n');
});
