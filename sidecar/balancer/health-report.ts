// The endpoints a sidecar's own checks took out (active health checks failing, outlier
// ejections), for its status report to the repo: the registry's health is in the catalog already,
// and `flb proxy-config` shows the two together. Only the exceptions are sent, bounded, because
// the repo keeps at most a few KiB per instance and a healthy mesh should cost nothing here.
import type { PoolSnapshot } from './pool.js';

export interface UnhealthyEndpoint {
  service: string;
  /** address:port ([v6]:port). */
  endpoint: string;
  activeHealth: string;
  ejected: boolean;
  ejectedUntil?: string;
}

export type EndpointHealthReport = {
  unhealthyEndpoints: UnhealthyEndpoint[];
  /** How many more there were than the report carries. */
  unhealthyEndpointsOmitted?: number;
};

/** Endpoints per report at most: about 100 bytes each in the repo's few KiB per instance. */
export const MAX_REPORTED_ENDPOINTS = 40;

const hostPort = (address: string, port: number) => (address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`);

export function endpointHealthReport(pools: Iterable<PoolSnapshot>, limit = MAX_REPORTED_ENDPOINTS): EndpointHealthReport {
  const unhealthy: UnhealthyEndpoint[] = [];
  let total = 0;
  for (const pool of pools)
    for (const e of pool.endpoints) {
      if (e.activeHealth !== 'unhealthy' && !e.ejected) continue;
      total++;
      if (unhealthy.length < limit)
        unhealthy.push({
          service: pool.service,
          endpoint: hostPort(e.address, e.port),
          activeHealth: e.activeHealth,
          ejected: e.ejected,
          ...(e.ejectedUntil !== undefined ? { ejectedUntil: e.ejectedUntil } : {}),
        });
    }
  return { unhealthyEndpoints: unhealthy, ...(total > unhealthy.length ? { unhealthyEndpointsOmitted: total - unhealthy.length } : {}) };
}
