import { describe, expect, it } from '@jest/globals';
import { fuzz } from '../../../common/testing/fuzz.js';

// 100,000 generated inputs: JSON.parse, four translations and a zod check of each service made
// (tens of microseconds each). The budget leaves room for a busy machine (2 shared cores); a hang
// (one input for 5 s) fails at once.
const BUDGET_MS = 60_000;

describe('fuzzing the Consul source', () => {
  it('turns any answer to /v1/health/service into a contract-valid service that does not depend on instance order, or none', async () => {
    const report = await fuzz({ module: 'registry-bridge/sources/consul/testing/fuzz-targets.ts', target: 'consul-service', budgetMs: BUDGET_MS });
    process.stderr.write(`consul-service: ${report.runs} inputs in ${report.ms} ms\n`);
    expect(report.runs).toBeGreaterThanOrEqual(100_000);
    expect(report.replayed).toBeGreaterThanOrEqual(3);
  }, 90_000);

  // Cheaper per input than consul-service (a node answer, one translation of a few entries): the same budget.
  it("turns any answer to a start's node read into a refusal, or entries of the wanted services that translate", async () => {
    const report = await fuzz({ module: 'registry-bridge/sources/consul/testing/fuzz-targets.ts', target: 'consul-node-read', budgetMs: BUDGET_MS });
    process.stderr.write(`consul-node-read: ${report.runs} inputs in ${report.ms} ms\n`);
    expect(report.runs).toBeGreaterThanOrEqual(100_000);
    expect(report.replayed).toBeGreaterThanOrEqual(3);
  }, 90_000);
});
