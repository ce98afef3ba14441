/*
 * The loader's mount-table reading under 100,000 generated inputs (bpf/testing/fuzz-targets.ts):
 * what the node agent's cgroup auto picks from the host's /proc/1/mountinfo. A failing input is
 * kept under bpf/testing/fuzz/crashers/ and replayed every run.
 */
import { describe, expect, it } from '@jest/globals';
import { fuzz } from '../common/testing/fuzz.js';

describe('fuzzing the loader', () => {
  it('reads 100,000 generated mount tables without a throw, picking a cgroup2 mount under the host root or naming what the host has', async () => {
    // Pure string work: about 2 s here (the report the test prints); the budget leaves room for a busy machine.
    const report = await fuzz({ module: 'bpf/testing/fuzz-targets.ts', target: 'mountinfo', runs: 100_000, budgetMs: 30_000 });
    console.log(`fuzz bpf mountinfo: ${report.runs} generated + ${report.replayed} corpus inputs in ${report.ms} ms (seed ${report.seed})`);
    expect(report.runs).toBe(100_000);
    expect(report.replayed).toBeGreaterThanOrEqual(4);
  }, 45_000);
});
