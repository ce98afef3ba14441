// The worker side of the fuzz harness (fuzz.ts): replays the corpus, then runs fast-check's inputs,
// copying each into shared memory before the target sees it so a watchdog in the other thread can
// name the input of a hang.
import fc from 'fast-check';
import { parentPort, workerData } from 'node:worker_threads';

export type FuzzCheck = typeof fc;

export interface FuzzTarget {
  /** Must return (or resolve) for every input; a throw or rejection is a finding. */
  run(input: Uint8Array): void | Promise<void>;
  /** The generated inputs; `seeds` are the corpus (and crashers), for mutation. */
  inputs(check: FuzzCheck, seeds: readonly Uint8Array[]): fc.Arbitrary<Uint8Array>;
}

interface WorkerData {
  target: string;
  seeds: Uint8Array[];
  crashers: Uint8Array[];
  runs: number;
  seed: number;
  shared: SharedArrayBuffer;
}

const MAX_INPUT = 1 << 20;

export async function runFuzzWorker(targets: Record<string, FuzzTarget>): Promise<void> {
  const data = workerData as WorkerData;
  const target = targets[data.target];
  const header = new Int32Array(data.shared, 0, 2);
  const bytes = new Uint8Array(data.shared, 8);
  const record = (input: Uint8Array) => {
    const length = Math.min(input.length, MAX_INPUT);
    bytes.set(input.subarray(0, length));
    Atomics.store(header, 1, length);
    Atomics.add(header, 0, 1);
  };
  const report = (error: unknown, input: Uint8Array) =>
    parentPort!.postMessage({ kind: 'failure', error: error instanceof Error ? (error.stack ?? error.message) : String(error), input });
  if (!target) {
    report(new Error(`no fuzz target named ${data.target} (have: ${Object.keys(targets).join(', ')})`), new Uint8Array());
    return;
  }

  let replayed = 0;
  for (const input of [...data.crashers, ...data.seeds]) {
    record(input);
    try {
      await target.run(input);
    } catch (error) {
      report(error, input);
      return;
    }
    replayed++;
  }

  let runs = 0;
  const property = fc.asyncProperty(target.inputs(fc, [...data.seeds, ...data.crashers]), async (input) => {
    record(input);
    runs++;
    await target.run(input);
  });
  const details = await fc.check(property, { numRuns: data.runs, seed: data.seed });
  if (details.failed) {
    // The smallest failing input fast-check found by shrinking, and the target's own error.
    const input = (details.counterexample?.[0] as Uint8Array | undefined) ?? new Uint8Array();
    report(details.errorInstance ?? new Error(`failed after ${details.numRuns} inputs`), input);
    return;
  }
  parentPort!.postMessage({ kind: 'done', runs: Math.min(runs, data.runs), replayed });
}
