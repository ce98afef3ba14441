// Our DNS server in a process of its own for bench/dns.ts, answering a synthetic catalog of
// `count` Kubernetes services (svc-<i>.bench.svc.cluster.local -> 10.96.<i/256>.<i%256>) with the
// pod search list of namespace `bench`. No upstream: the benchmark asks only catalog names.
// Prints the port on stdout once listening.
import { ServiceSchema } from '../../common/contract/catalog.js';
import { createLogger } from '../../common/log.js';
import { startDnsServer } from '../../sidecar/dns/server.js';
import { buildDnsTable } from '../../sidecar/dns/table.js';

const count = Number(process.argv[2] ?? 1000);
const services = Array.from({ length: count }, (_, i) =>
  ServiceSchema.parse({
    apiVersion: 'flb.flomesh.io/v1alpha1',
    kind: 'Service',
    id: `svc-${i}.bench`,
    name: `svc-${i}`,
    namespace: 'bench',
    source: 'kubernetes',
    vips: [{ address: `10.96.${i >> 8}.${i & 255}`, allocation: 'cluster-ip' }],
    ports: [{ name: 'http', port: 80, protocol: 'http' }],
  }),
);
const table = buildDnsTable(services, [], ['bench.svc.cluster.local', 'svc.cluster.local', 'cluster.local']);
const server = await startDnsServer({ table, listen: [{ host: '127.0.0.1', port: 0 }], upstreams: [], log: createLogger('bench-dns', 'error') });
process.stdout.write(`${server.ports[0]!.port}\n`);
process.on('SIGTERM', () => void server.close().then(() => process.exit(0)));
