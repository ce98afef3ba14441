/*
 * Waiting for a sidecar to be ready: its admin port's /ready answering 200. Two things wait on it,
 * each on every injected pod's start path: `flb sidecar wait-ready` (the postStart hook, when the
 * sidecar starts after the interception rules) and `flb iptables apply --wait-for-sidecar` (the
 * init container, when the native sidecar starts first and the rules are applied while it
 * starts). Node's http alone: both run from small bundles whose start-up CPU is measured.
 */
import { request } from 'node:http';

/**
 * Until the sidecar's admin port listens (or with a sidecar older than `/ready?wait=`, which
 * answers at once), the waiter asks again after this. A question costs about 1 ms of CPU here and,
 * once the sidecar listens, 0.75 ms there (measured at load 20): every 10 ms that was 0.17 of a
 * core per pod starting, two cores' worth with a dozen injected pods starting at once, taken from
 * the sidecars being waited for. Every 50 ms: 25 ms late on average, 0.035 of a core.
 */
export const POLL_INTERVAL_MS = 50;
/**
 * Once it listens, the sidecar holds each question this long (`/ready?wait=`) and answers the
 * moment it is ready: no lateness, one question per hold instead of one per interval.
 */
export const READY_HOLD_MS = 5_000;
export const DEFAULT_WAIT_TIMEOUT_MS = 120_000;
/** The mesh's default admin port (DEFAULT_PORTS.admin, whose module would load zod; a test keeps them equal). */
export const DEFAULT_ADMIN_PORT = 15000;

export interface WaitReadyArgs {
  adminPort: number;
  timeoutMs: number;
}

/** Resolves once the admin port's /ready answers 200; rejects at the deadline with the sidecar's last answer. */
export async function waitUntilReady(args: WaitReadyArgs & { intervalMs?: number }): Promise<void> {
  const deadline = Date.now() + args.timeoutMs;
  const url = `http://127.0.0.1:${args.adminPort}/ready`;
  const interval = args.intervalMs ?? POLL_INTERVAL_MS;
  for (;;) {
    const asked = Date.now();
    const holdMs = Math.max(0, Math.min(READY_HOLD_MS, deadline - asked));
    const answer = await getText(`${url}?wait=${holdMs}ms`, holdMs + 1000).catch((error: unknown) => ({
      status: 0,
      body: `no answer: ${(error as Error).message}`,
    }));
    if (answer.status === 200) return;
    if (Date.now() > deadline)
      throw new Error(
        `the sidecar was not ready within ${args.timeoutMs / 1000} s (${url}: ${answer.body.trim() || answer.status}); see its logs: kubectl logs <pod> -c flb-sidecar`,
      );
    // An answer that was not held (nothing listening yet, an older sidecar) is asked again after the interval.
    const early = interval - (Date.now() - asked);
    if (early > 0) await new Promise((resolve) => setTimeout(resolve, early));
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
