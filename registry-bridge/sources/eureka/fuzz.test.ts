import { describe, expect, it } from '@jest/globals';
import { fuzz } from '../../../common/testing/fuzz.js';

// 100,000 generated inputs. JSON.parse and the zod check of each translated service dominate; the
// budget leaves room for a busy machine (2 shared cores), and a hang (one input for 5 s) fails at once.
const BUDGET_MS = 60_000;

describe('fuzzing the Eureka source', () => {
  it('reads any answer a Eureka server sends into a true local copy and contract-valid services, or refuses it as not a registry', async () => {
    const report = await fuzz({ module: 'registry-bridge/sources/eureka/testing/fuzz-targets.ts', target: 'eureka-answer', budgetMs: BUDGET_MS });
    process.stderr.write(`eureka-answer: ${report.runs} inputs in ${report.ms} ms\n`);
    expect(report.runs).toBeGreaterThanOrEqual(100_000);
    expect(report.replayed).toBeGreaterThanOrEqual(5);
  }, 90_000);
});
