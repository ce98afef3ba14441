import { describe, expect, it } from '@jest/globals';
import { fuzz } from '../../../common/testing/fuzz.js';

// 100,000 generated inputs, each decoded as from two kinds of peer. On this machine (2 shared
// cores, load average 18 from other work) a run took 6.5 s; the budget leaves room for a busier
// machine, and a hang (one input running for 5 s) fails at once.
const BUDGET_MS = 60_000;

describe('fuzzing the BGP decoder', () => {
  it('reads any bytes a peer sends as messages or one NOTIFICATION to answer, and re-encodes what it accepts to the same', async () => {
    const report = await fuzz({ module: 'sidecar/bgp/testing/fuzz-targets.ts', target: 'peer-bytes', budgetMs: BUDGET_MS });
    console.log(`peer-bytes: ${report.runs} inputs in ${report.ms} ms (seed ${report.seed})`);
    expect(report.runs).toBeGreaterThanOrEqual(100_000);
    expect(report.replayed).toBeGreaterThan(0);
  }, 90_000);
});
