import { accessSync, constants } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

/**
 * One folder, outside the clone, for everything the setup builds or downloads once: Go build and
 * module caches and the test servers' binaries. Same default as scripts/setup.sh.
 */
export function cacheDir(): string {
  return process.env.FLB_CACHE_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'flb-mesh');
}

/** A test server built by `npm run setup`; a missing one is an error that says how to get it. */
export function testBinary(name: 'etcd' | 'kube-apiserver' | 'kube-controller-manager' | 'kubectl' | 'helm' | 'consul'): string {
  const path = join(cacheDir(), 'bin', name);
  try {
    accessSync(path, constants.X_OK);
  } catch {
    throw new Error(`${name} is not built: expected ${path}. Run 'npm run setup' (it builds the test servers from their Go modules).`);
  }
  return path;
}
