/*
 * `flb sidecar wait-ready`: the postStart hook that holds a pod's next containers until its
 * sidecar is ready. It runs on every injected pod's start, on the critical path, beside a sidecar
 * that is starting on the same cores, so bin/flb.js runs it from this module alone (Node's http
 * and the duration parser; the whole CLI costs ~150 ms of CPU more). Once the admin port listens,
 * the sidecar holds its question (`/ready?wait=`) and answers the moment it is ready: the hook
 * returns within milliseconds of it, where a startup probe (period 1 s at least) would see it up
 * to a second later.
 *
 * Anything this parser does not take as written (--help, an unknown flag, a bad value) goes to the
 * full CLI (sidecar/cli.ts), which answers it with its usage errors.
 */
import { parseArgs } from 'node:util';
import { parseDuration } from '../common/duration.js';
import { DEFAULT_ADMIN_PORT, DEFAULT_WAIT_TIMEOUT_MS, waitUntilReady, type WaitReadyArgs } from '../common/sidecar-ready.js';

export { DEFAULT_ADMIN_PORT, DEFAULT_WAIT_TIMEOUT_MS, POLL_INTERVAL_MS, READY_HOLD_MS, waitUntilReady, type WaitReadyArgs } from '../common/sidecar-ready.js';

/** `[--timeout=D] [--admin-port=P]` (either spelling commander takes), or undefined for anything else. */
export function parseWaitReadyArgs(args: readonly string[]): WaitReadyArgs | undefined {
  let values: { timeout?: string; 'admin-port'?: string };
  try {
    ({ values } = parseArgs({
      args: [...args],
      options: { timeout: { type: 'string' }, 'admin-port': { type: 'string' } },
      strict: true,
      allowPositionals: false,
    }));
  } catch {
    return undefined;
  }
  const port = values['admin-port'];
  if (port !== undefined && (!/^\d+$/.test(port) || Number(port) > 65535)) return undefined;
  let timeoutMs = DEFAULT_WAIT_TIMEOUT_MS;
  if (values.timeout !== undefined) {
    try {
      timeoutMs = parseDuration(values.timeout);
    } catch {
      return undefined;
    }
  }
  return { adminPort: port === undefined ? DEFAULT_ADMIN_PORT : Number(port), timeoutMs };
}

/**
 * bin/flb.js's fast path for `flb sidecar wait-ready ARGS`: the exit code, or undefined when the
 * arguments are for the full CLI to answer.
 */
export async function runWaitReady(args: readonly string[]): Promise<number | undefined> {
  const parsed = parseWaitReadyArgs(args);
  if (!parsed) return undefined;
  try {
    await waitUntilReady(parsed);
    return 0;
  } catch (error) {
    process.stderr.write(`flb: ${(error as Error).message}\n`);
    return 1;
  }
}
