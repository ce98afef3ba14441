/*
 * The CNI plugin's parsers under clang's libFuzzer with AddressSanitizer and UBSan
 * (fuzz/target.c: the cniVersion taken from stdin, JSON escaping of error results and log lines,
 * the agent's answer framing, stdin reading, request fields). Every crasher kept in
 * fuzz/crashers/parsers/ is replayed first; then the fuzzer starts from the seed corpus in
 * fuzz/corpus/parsers/ (new inputs it finds go to a temporary folder, not the repo). A crash,
 * a sanitizer report or an input running past -timeout is saved under crashers/ (commit it).
 */
import { describe, expect, it } from '@jest/globals';
import { execFile } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));
const binary = join(here, 'build/fuzz/flb-cni-fuzz');
const corpus = join(here, 'fuzz/corpus/parsers');
const crashers = join(here, 'fuzz/crashers/parsers');
/** 250,000 inputs take about 10 s on one core here; the deadline leaves room for a busy machine. */
const RUNS = 250_000;
const MAX_SECONDS = 25;

function run(args: string[], timeoutMs: number): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    execFile(binary, args, { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      resolve({ code: error ? ((error as { code?: number }).code ?? null) : 0, output: `${stdout}${stderr}` });
    });
  });
}

const inputs = (dir: string) =>
  existsSync(dir)
    ? readdirSync(dir)
        .filter((name) => !name.startsWith('.'))
        .map((name) => join(dir, name))
    : [];

describe('the CNI plugin under libFuzzer', () => {
  it('is built (clang with libFuzzer)', () => {
    if (!existsSync(binary)) {
      throw new Error(`${binary} is missing: run 'npm run setup', which builds it with clang -fsanitize=fuzzer (Debian packages clang and libclang-rt-14-dev)`);
    }
  });

  it('replays every crasher kept in the repo without a failure', async () => {
    const kept = inputs(crashers);
    if (kept.length === 0) return;
    const replay = await run(['-timeout=5', ...kept], 60_000);
    expect({ code: replay.code, output: replay.code === 0 ? '' : replay.output.slice(-4000) }).toEqual({ code: 0, output: '' });
  });

  it(
    `runs ${RUNS} inputs from the seed corpus without a crash, a sanitizer report or a hang`,
    async () => {
      const scratch = mkdtempSync(join(tmpdir(), 'flb-cni-fuzz-'));
      mkdirSync(crashers, { recursive: true });
      const started = performance.now();
      try {
        const fuzzing = await run(
          [
            `-runs=${RUNS}`,
            `-max_total_time=${MAX_SECONDS}`,
            '-timeout=5',
            '-max_len=4096',
            '-rss_limit_mb=1024',
            '-print_final_stats=1',
            `-artifact_prefix=${crashers}/`,
            scratch,
            corpus,
          ],
          (MAX_SECONDS + 30) * 1000,
        );
        const units = Number(/stat::number_of_executed_units:\s*(\d+)/.exec(fuzzing.output)?.[1] ?? 0);
        const seed = Number(/Seed: (\d+)/.exec(fuzzing.output)?.[1] ?? 0);
        const ms = Math.round(performance.now() - started);
        if (fuzzing.code !== 0) {
          throw new Error(
            `libFuzzer failed (exit ${fuzzing.code}, seed ${seed}); the input is saved under ${crashers}/ and replayed from now on:\n${fuzzing.output.slice(-6000)}`,
          );
        }
        // scripts/test.sh prints these after the suite, with the JavaScript targets'.
        if (process.env.FLB_FUZZ_REPORT) {
          appendFileSync(
            process.env.FLB_FUZZ_REPORT,
            `${JSON.stringify({ target: 'cni plugin (libFuzzer, C)', replayed: inputs(corpus).length, runs: units, ms, seed })}\n`,
          );
        }
        expect(units).toBeGreaterThanOrEqual(100_000);
      } finally {
        rmSync(scratch, { recursive: true, force: true });
      }
    },
    (MAX_SECONDS + 60) * 1000,
  );
});
