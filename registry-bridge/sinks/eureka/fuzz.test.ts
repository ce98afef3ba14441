import { describe, expect, it } from '@jest/globals';
import { fuzz } from '../../../common/testing/fuzz.js';

// 100,000 generated inputs: a JSON.parse, /apps read and six decisions per instance (a few
// microseconds each): a few seconds. The budget leaves room for a busy machine (2 shared cores).
const BUDGET_MS = 60_000;

describe('fuzzing the Eureka sink', () => {
  it('never registers over or cancels an instance that is not its own, whatever the server answers to /apps', async () => {
    const report = await fuzz({ module: 'registry-bridge/sinks/eureka/testing/fuzz-targets.ts', target: 'eureka-apps', budgetMs: BUDGET_MS });
    process.stderr.write(`eureka-apps: ${report.runs} inputs in ${report.ms} ms\n`);
    expect(report.runs).toBeGreaterThanOrEqual(100_000);
    expect(report.replayed).toBeGreaterThanOrEqual(2);
  }, 90_000);
});
