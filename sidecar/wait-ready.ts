/*
 * `flb sidecar wait-ready`: the postStart hook that holds a pod's next containers until its
 * sidecar is ready. It runs on every injected pod's start, on the critical path, beside a sidecar
 * that is starting on the same cores, so bin/flb.js runs it from this module alone (Node's http
 * and the duration parser; the whole CLI costs ~150 ms of CPU more) and it asks every
 * POLL_INTERVAL_MS: the hook returns within tens of milliseconds of the sidecar being ready, where
 * a startup probe (period 1 s at least) would see it up to a second later.
 *
 * Anything this parser does not take as written (--help, an unknown flag, a bad value) goes to the
 * full CLI (sidecar/cli.ts), which answers it with its usage errors.
 */
import { request } from 'node:http';
import { parseArgs } from 'node:util';
import { parseDuration } from '../common/duration.js';

/**
 * A question costs about 1 ms of CPU here and, once the sidecar listens, 0.75 ms there (measured at
 * load 20): every 10 ms that was 0.17 of a core per pod starting, two cores' worth with a dozen
 * injected pods starting at once, taken from the sidecars being waited for. Every 50 ms: 25 ms late
 * on average (a startup probe is up to a second), 0.035 of a core.
 */
export const POLL_INTERVAL_MS = 50;
export const DEFAULT_WAIT_TIMEOUT_MS = 120_000;
/** The mesh's default admin port (DEFAULT_PORTS.admin, whose module would load zod; a test keeps them equal). */
export const DEFAULT_ADMIN_PORT = 15000;

export interface WaitReadyArgs {
  adminPort: number;
  timeoutMs: number;
}

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

/** Resolves once the admin port's /ready answers 200; rejects at the deadline with the sidecar's last answer. */
export async function waitUntilReady(args: WaitReadyArgs & { intervalMs?: number }): Promise<void> {
  const deadline = Date.now() + args.timeoutMs;
  const url = `http://127.0.0.1:${args.adminPort}/ready`;
  for (;;) {
    const answer = await getText(url, 1000).catch((error: unknown) => ({ status: 0, body: `no answer: ${(error as Error).message}` }));
    if (answer.status === 200) return;
    if (Date.now() > deadline)
      throw new Error(
        `the sidecar was not ready within ${args.timeoutMs / 1000} s (${url}: ${answer.body.trim() || answer.status}); see its logs: kubectl logs <pod> -c flb-sidecar`,
      );
    await new Promise((resolve) => setTimeout(resolve, args.intervalMs ?? POLL_INTERVAL_MS));
  }
}

function getText(url: string, timeoutMs: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    // A connection per request: a kept-alive one would hold this short-lived process open.
    const req = request(url, { agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
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
