import { describe, expect, it } from '@jest/globals';
import type { V1Container } from '@kubernetes/client-node';
import { AppPreStopSchema, DEFAULT_PORTS } from '../common/contract/index.js';
import { appPreStopsJson, drainHooks } from './prestop.js';

describe('the BGP drain hooks', () => {
  it("write the app's own httpGet and sleep hooks in FLB_APP_PRESTOP as the sidecar reads them back, named ports resolved", () => {
    const containers: V1Container[] = [
      {
        name: 'web',
        ports: [{ name: 'admin', containerPort: 8081 }],
        lifecycle: {
          preStop: { httpGet: { path: '/quit', port: 'admin' as unknown as number, scheme: 'HTTPS', httpHeaders: [{ name: 'x-why', value: 'drain' }] } },
        },
      },
      { name: 'worker', lifecycle: { preStop: { sleep: { seconds: 5 } } } },
      { name: 'plain' },
    ];
    const warnings: string[] = [];
    const rewrites = drainHooks(containers, DEFAULT_PORTS, warnings);
    expect(rewrites.map((r) => r.hook.httpGet?.path)).toEqual(['/drain/bgp?container=web', '/drain/bgp?container=worker', '/drain/bgp']);
    const written = JSON.parse(appPreStopsJson(rewrites)!) as Record<string, unknown>;
    // The sidecar parses each entry with the same schema (sidecar/probes.ts, parseAppPreStops).
    const read = Object.fromEntries(Object.entries(written).map(([name, hook]) => [name, AppPreStopSchema.parse(hook)]));
    expect(read).toEqual({
      web: { type: 'http', port: 8081, path: '/quit', scheme: 'HTTPS', headers: [{ name: 'x-why', value: 'drain' }] },
      worker: { type: 'sleep', seconds: 5 },
    });
    expect(warnings).toEqual([]);
  });
});
