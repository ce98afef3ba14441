import { open } from 'node:fs/promises';

/**
 * The two pieces every crash-safe writer here needs (the repo's disk store, the sidecar's
 * configuration cache): a directory fsync, which makes the renames into it durable, and a bounded
 * parallel loop, because ten thousand files opened at once would run out of descriptors.
 */
export async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export async function inParallel<T>(items: readonly T[], work: (item: T) => Promise<unknown>, limit = 32): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) await work(items[next++]!);
    }),
  );
}
