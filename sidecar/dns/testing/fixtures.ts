import { API_VERSION } from '../../../common/contract/primitives.js';
import { ServiceSchema, type Service, type ServiceInput } from '../../../common/contract/catalog.js';

/** A catalog service with the contract's defaults, for DNS tests: say only what the test is about. */
export const service = (s: Partial<ServiceInput> & Pick<ServiceInput, 'id' | 'name' | 'source'>): Service =>
  ServiceSchema.parse({ apiVersion: API_VERSION, kind: 'Service', ports: [{ port: 80 }], ...s });

/** A Kubernetes service with a ClusterIP and two named ports (http and grpc), as most DNS tests need. */
export const orders = service({
  id: 'orders.shop',
  name: 'orders',
  namespace: 'shop',
  source: 'kubernetes',
  vips: [{ address: '10.96.14.20', allocation: 'cluster-ip' }],
  ports: [
    { name: 'http', port: 80, protocol: 'http' },
    { name: 'grpc', port: 9090, protocol: 'grpc' },
  ],
});
