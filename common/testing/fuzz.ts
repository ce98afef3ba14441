// The fuzz harness every part's fuzz tests share: a target runs in a worker thread, and the test's
// thread watches it. A parser that loops forever on some input cannot be stopped from inside its
// own thread; a watchdog outside it can terminate the worker and still say which input did it,
// because the worker copies each input into shared memory before running it.
//
// A target module (in a `testing/` folder of its part, so it is not built into dist/) exports
// `fuzzTargets`: name -> { run(bytes), inputs(fc, seeds) }. The harness bundles the module with
// esbuild for the worker (worker threads cannot load TypeScript), replays the seed corpus and
// every crasher kept in the repo, then runs fast-check's generated inputs. A failure or a hang
// saves its input under `<dir>/crashers/<target>/` so it is replayed from then on.
import { createHash } from 'node:crypto';
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';

export interface FuzzOptions {
  /** The target module, a path (absolute, or relative to the repository root). */
  module: string;
  /** Which of its `fuzzTargets`. */
  target: string;
  /** Folder holding `corpus/<target>/` (seeds) and `crashers/<target>/`; default: the module's folder + `/fuzz`. */
  dir?: string;
  /** Generated inputs after the corpus: 100,000 unless told. */
  runs?: number;
  /** The whole run's deadline; past it the worker is stopped and the test fails as too slow. */
  budgetMs?: number;
  /** No progress for this long (one input running) counts as a hang. */
  hangMs?: number;
  seed?: number;
}

export interface FuzzReport {
  target: string;
  /** Corpus and crasher inputs replayed. */
  replayed: number;
  /** Generated inputs run. */
  runs: number;
  ms: number;
  seed: number;
}

export class FuzzFailure extends Error {
  constructor(
    message: string,
    readonly input: Uint8Array,
    readonly savedAs: string,
  ) {
    super(message);
    this.name = 'FuzzFailure';
  }
}

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
/** Shared memory: [inputs started, input length], then the input's bytes. */
const HEADER_INTS = 2;
export const MAX_FUZZ_INPUT = 1 << 20;

const bundles = new Map<string, Promise<string>>();

/** The worker's script: the runner and the target module in one ESM file under node_modules/.cache (so its imports resolve). */
async function bundle(modulePath: string): Promise<string> {
  let pending = bundles.get(modulePath);
  if (!pending) {
    pending = (async () => {
      const { build } = await import('esbuild');
      const runner = join(ROOT, 'common/testing/fuzz-runner.ts');
      const out = join(ROOT, 'node_modules/.cache/flb-fuzz', `${createHash('sha1').update(modulePath).digest('hex').slice(0, 12)}.mjs`);
      await build({
        stdin: {
          contents: `import { runFuzzWorker } from ${JSON.stringify(runner)};\nimport { fuzzTargets } from ${JSON.stringify(modulePath)};\nrunFuzzWorker(fuzzTargets);\n`,
          resolveDir: ROOT,
          loader: 'ts',
        },
        outfile: out,
        bundle: true,
        platform: 'node',
        format: 'esm',
        target: 'node20',
        packages: 'external',
        sourcemap: 'inline',
        logLevel: 'error',
      });
      return out;
    })();
    bundles.set(modulePath, pending);
  }
  return pending;
}

function readInputs(folder: string): Uint8Array[] {
  if (!existsSync(folder)) return [];
  return readdirSync(folder)
    .sort()
    .map((name) => new Uint8Array(readFileSync(join(folder, name))));
}

function save(folder: string, input: Uint8Array): string {
  mkdirSync(folder, { recursive: true });
  const file = join(folder, createHash('sha1').update(input).digest('hex').slice(0, 16));
  writeFileSync(file, input);
  return file;
}

const hex = (input: Uint8Array) => Buffer.from(input.subarray(0, 512)).toString('hex') + (input.length > 512 ? `... (${input.length} bytes)` : '');

/**
 * Runs one target: resolves with its report, rejects with a FuzzFailure naming the input (and the
 * file it was saved to) when the target threw, returned a rejected promise, or hung.
 */
export async function fuzz(options: FuzzOptions): Promise<FuzzReport> {
  const modulePath = resolve(ROOT, options.module);
  const dir = options.dir ? resolve(ROOT, options.dir) : join(dirname(modulePath), 'fuzz');
  const seeds = readInputs(join(dir, 'corpus', options.target));
  const crashersDir = join(dir, 'crashers', options.target);
  const crashers = readInputs(crashersDir);
  const runs = options.runs ?? 100_000;
  const budgetMs = options.budgetMs ?? 60_000;
  const hangMs = options.hangMs ?? 5_000;
  const seed = options.seed ?? (Number(process.env.FLB_FUZZ_SEED) || Date.now() % 2 ** 31);
  const script = await bundle(modulePath);

  const shared = new SharedArrayBuffer(HEADER_INTS * 4 + MAX_FUZZ_INPUT);
  const header = new Int32Array(shared, 0, HEADER_INTS);
  const bytes = new Uint8Array(shared, HEADER_INTS * 4);
  const current = () => bytes.slice(0, Math.min(Atomics.load(header, 1), MAX_FUZZ_INPUT));
  const started = performance.now();
  const worker = new Worker(script, {
    workerData: { target: options.target, seeds, crashers, runs, seed, shared },
    // A parser that allocates without bound must fail here, not take the machine's memory.
    resourceLimits: { maxOldGenerationSizeMb: 1024 },
  });

  return new Promise<FuzzReport>((resolvePromise, reject) => {
    let settled = false;
    let lastCount = -1;
    let lastChange = performance.now();
    const finish = (error?: Error, report?: FuzzReport) => {
      if (settled) return;
      settled = true;
      clearInterval(watchdog);
      void worker.terminate();
      if (error) reject(error);
      else resolvePromise(report!);
    };
    const failWith = (what: string, input: Uint8Array) => {
      const savedAs = save(crashersDir, input);
      finish(
        new FuzzFailure(
          `fuzz target ${options.target} (seed ${seed}): ${what}\ninput (saved as ${savedAs}, replayed by every run from now on): ${hex(input)}`,
          input,
          savedAs,
        ),
      );
    };
    const watchdog = setInterval(() => {
      const count = Atomics.load(header, 0);
      const now = performance.now();
      if (count !== lastCount) {
        lastCount = count;
        lastChange = now;
      } else if (now - lastChange > hangMs) {
        failWith(`hang: one input ran for more than ${hangMs} ms`, current());
        return;
      }
      if (now - started > budgetMs)
        finish(
          new Error(
            `fuzz target ${options.target}: ${count} inputs in ${budgetMs} ms, fewer than the ${runs + seeds.length + crashers.length} wanted; the target is too slow or the machine too busy (raise budgetMs only with a reason)`,
          ),
        );
    }, 100);
    worker.on('message', (message: { kind: 'done'; runs: number; replayed: number } | { kind: 'failure'; error: string; input: Uint8Array }) => {
      if (message.kind === 'failure') failWith(message.error, message.input);
      else {
        const report = { target: options.target, replayed: message.replayed, runs: message.runs, ms: Math.round(performance.now() - started), seed };
        // scripts/test.sh prints these after the suite: each target's input count and time.
        if (process.env.FLB_FUZZ_REPORT) appendFileSync(process.env.FLB_FUZZ_REPORT, `${JSON.stringify(report)}\n`);
        finish(undefined, report);
      }
    });
    worker.on('error', (error) => failWith(`the worker died: ${error.stack ?? error.message}`, current()));
    worker.on('exit', (code) => {
      if (!settled) failWith(`the worker exited with code ${code} before finishing`, current());
    });
  });
}
