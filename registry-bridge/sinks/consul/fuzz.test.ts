import { describe, expect, it } from '@jest/globals';
import { fuzz } from '../../../common/testing/fuzz.js';

// 100,000 generated inputs: a JSON.parse, the node read back and six decisions per instance (a few
// microseconds each): a few seconds. The budget leaves room for a busy machine (2 shared cores).
const BUDGET_MS = 60_000;

describe('fuzzing the Consul sink', () => {
  it('never writes over or removes an instance on its node that is not its own, whatever Consul answers', async () => {
    const report = await fuzz({ module: 'registry-bridge/sinks/consul/testing/fuzz-targets.ts', target: 'consul-node', budgetMs: BUDGET_MS });
    process.stderr.write(`consul-node: ${report.runs} inputs in ${report.ms} ms\n`);
    expect(report.runs).toBeGreaterThanOrEqual(100_000);
    expect(report.replayed).toBeGreaterThanOrEqual(2);
  }, 90_000);
});
