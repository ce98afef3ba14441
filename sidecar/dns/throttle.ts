import type { Logger } from '../../common/log.js';

/**
 * A logger call that speaks at most once per interval and says how many it held back: a socket
 * error or a bug on the hot path would otherwise write a line per query, at 100,000 a second.
 */
export function throttled(log: Logger, level: 'warn' | 'error', intervalMs = 10_000): (fields: Record<string, unknown>, message: string) => void {
  let last = Number.NEGATIVE_INFINITY;
  let held = 0;
  return (fields, message) => {
    const now = performance.now();
    if (now - last < intervalMs) {
      held += 1;
      return;
    }
    log[level]({ ...fields, ...(held > 0 ? { suppressed: held } : {}) }, message);
    last = now;
    held = 0;
  };
}
