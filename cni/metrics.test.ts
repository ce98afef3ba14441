/*
 * What the CNI agent's /metrics tells an operator: calls by command and result, how long sandboxes
 * waited, and the repair loop.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../common/log.js';
import { startMetricsServer } from '../common/metrics.js';
import { CniAgent, type CniRequest } from './agent.js';
import { CniAgentMetrics } from './metrics.js';

let work: string;
let metrics: CniAgentMetrics;
let agent: CniAgent;

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'flb-cni-metrics-'));
  metrics = new CniAgentMetrics();
  agent = new CniAgent({
    socketPath: join(work, 'agent.sock'),
    stateDir: join(work, 'state'),
    getPod: async () => undefined,
    log: createLogger('cni-metrics-test', 'silent'),
    metrics,
  });
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

const call = (r: Partial<CniRequest>) =>
  agent.handle({ command: 'ADD', containerId: 'c1', netns: work, ifName: 'eth0', args: '', path: '/opt/cni/bin', stdin: '{}', ...r });
/** The sample lines of a scrape that start with `prefix`. */
const samples = async (prefix: string) => (await metrics.registry.metrics()).split('\n').filter((line) => line.startsWith(prefix));

describe("the CNI agent's metrics", () => {
  it('count calls by command and result, naming the CNI error, and time them', async () => {
    await call({ command: 'VERSION' });
    await call({ stdin: 'not json' });
    const podArgs = 'K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0';
    await call({ args: podArgs, stdin: JSON.stringify({ cniVersion: '1.0.0', name: 'net', prevResult: { cniVersion: '1.0.0' } }) });
    await call({ command: 'MADE-UP', stdin: JSON.stringify({ cniVersion: '1.0.0' }) });
    expect(await samples('flb_cni_requests_total{')).toEqual([
      'flb_cni_requests_total{command="VERSION",result="ok"} 1',
      'flb_cni_requests_total{command="ADD",result="decode"} 1',
      'flb_cni_requests_total{command="ADD",result="tryAgainLater"} 1',
      'flb_cni_requests_total{command="unknown",result="invalidEnvironment"} 1',
    ]);
    expect(await samples('flb_cni_request_duration_seconds_count{command="ADD"}')).toEqual(['flb_cni_request_duration_seconds_count{command="ADD"} 2']);
  });

  it('count what the repair loop did, and say while its passes fail', async () => {
    metrics.repairPass({ deleted: ['shop/a', 'shop/b'], labelled: ['shop/c'] });
    metrics.repairPass('failed');
    expect(await samples('flb_cni_repair')).toEqual([
      'flb_cni_repaired_pods_total{action="deleted"} 2',
      'flb_cni_repaired_pods_total{action="labelled"} 1',
      'flb_cni_repair_failing 1',
    ]);
    metrics.repairPass({ deleted: [], labelled: [] });
    expect(await samples('flb_cni_repair_failing')).toEqual(['flb_cni_repair_failing 0']);
  });

  it('are served on GET /metrics with the standard process metrics', async () => {
    const server = await startMetricsServer(metrics.registry, { host: '127.0.0.1', port: 0 }, { what: 'test metrics', flag: '--metrics-listen' });
    try {
      const scrape = await fetch(`http://127.0.0.1:${server.port}/metrics`);
      expect(scrape.status).toBe(200);
      const text = await scrape.text();
      expect(text).toMatch(/^process_cpu_seconds_total \d/m);
      expect(text).toMatch(/^flb_cni_requests_total\{command="VERSION",result="ok"\} 1$/m);
      expect((await fetch(`http://127.0.0.1:${server.port}/other`)).status).toBe(404);
    } finally {
      await server.close();
    }
  });
});
