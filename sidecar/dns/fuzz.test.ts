import { describe, expect, it } from '@jest/globals';
import { fuzz } from '../../common/testing/fuzz.js';

const module = 'sidecar/dns/testing/fuzz-targets.ts';

// 100,000 generated inputs each. On this machine (2 shared cores) dns-query runs them in 2 to 4 s,
// upstream-answer in 3.5 to 5 s; the budget leaves room for a busy machine, and a hang (one input
// running for 5 s) fails at once.
const BUDGET_MS = 60_000;

describe('fuzzing the DNS server', () => {
  it('answers any bytes sent as a query with one well-formed response, or drops them', async () => {
    const report = await fuzz({ module, target: 'dns-query', budgetMs: BUDGET_MS });
    expect(report.runs).toBeGreaterThanOrEqual(100_000);
    expect(report.replayed).toBeGreaterThan(0);
  }, 90_000);

  it('reads any bytes an upstream sends back without hanging, and replays only well-formed answers', async () => {
    const report = await fuzz({ module, target: 'upstream-answer', budgetMs: BUDGET_MS });
    expect(report.runs).toBeGreaterThanOrEqual(100_000);
    expect(report.replayed).toBeGreaterThan(0);
  }, 90_000);
});
