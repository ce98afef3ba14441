import { describe, expect, it } from '@jest/globals';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fuzz, FuzzFailure } from './fuzz.js';

const module = 'common/testing/fuzz-selftest-targets.ts';

describe('fuzz harness', () => {
  it('runs the corpus and the generated inputs of a sound target and counts them', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'flb-fuzz-'));
    try {
      const report = await fuzz({ module, target: 'sound', dir, runs: 20_000, budgetMs: 60_000 });
      expect(report.runs).toBe(20_000);
      expect(report.replayed).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('fails with the input that threw, and keeps it as a crasher that is replayed next time', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'flb-fuzz-'));
    try {
      const failure = await fuzz({ module, target: 'throws', dir, runs: 10 }).catch((error: unknown) => error);
      expect(failure).toBeInstanceOf(FuzzFailure);
      expect((failure as FuzzFailure).message).toMatch(/marker found/);
      const saved = readdirSync(join(dir, 'crashers', 'throws'));
      expect(saved).toHaveLength(1);
      expect([...readFileSync(join(dir, 'crashers', 'throws', saved[0]!))]).toEqual([0xde, 0xad, 0x01]);
      // Replayed before anything is generated: the crasher alone fails the next run.
      await expect(fuzz({ module, target: 'throws', dir, runs: 0 })).rejects.toThrow(/marker found/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('stops a target that never returns and names the input', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'flb-fuzz-'));
    try {
      const started = Date.now();
      const failure = (await fuzz({ module, target: 'hangs', dir, runs: 100_000, hangMs: 1_000 }).catch((error: unknown) => error)) as FuzzFailure;
      expect(failure).toBeInstanceOf(FuzzFailure);
      expect(failure.message).toMatch(/hang/);
      expect([...failure.input]).toEqual([0xde, 0xad, 0x02]);
      expect(Date.now() - started).toBeLessThan(20_000);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
