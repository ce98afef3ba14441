import { pino, type Logger, type LevelWithSilent } from 'pino';

/**
 * Every part logs structured JSON to stderr, never stdout: stdout is for data a user pipes
 * on (`flb inject`, `flb iptables print`), and the CNI plugin's stdout is its result.
 */
export function createLogger(component: string, level: LevelWithSilent = defaultLevel()): Logger {
  return pino({ name: component, level, base: { component } }, pino.destination({ fd: 2, sync: true }));
}

function defaultLevel(): LevelWithSilent {
  const fromEnv = process.env.FLB_LOG_LEVEL;
  const levels: readonly string[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
  return fromEnv && levels.includes(fromEnv) ? (fromEnv as LevelWithSilent) : 'info';
}

export type { Logger };
