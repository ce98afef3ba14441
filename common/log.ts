/*
 * Logging for every part. Logs go to stderr, never stdout: stdout is for data a user pipes on
 * (`flb inject`, `flb iptables print`), and the CNI plugin's stdout is its result.
 *
 * Machines get pino's JSON lines (numeric levels, one object a line). A person running a command
 * in a terminal gets readable lines from pino-pretty instead; it is loaded only then, so a sidecar
 * in a pod (whose stderr is never a terminal) does not pay for it. FLB_LOG_FORMAT=json|pretty
 * overrides the choice; FLB_LOG_LEVEL sets the level. A value that is not one of the list is
 * refused, never silently replaced by the default.
 */
import { writeSync } from 'node:fs';
import { createRequire } from 'node:module';
import { pino, type DestinationStream, type Logger, type LevelWithSilent } from 'pino';
import type PinoPretty from 'pino-pretty';
import { UsageError } from './errors.js';

export const LOG_LEVELS: readonly LevelWithSilent[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
export const LOG_FORMATS = ['json', 'pretty'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

export function createLogger(component: string, level: LevelWithSilent = logLevelFromEnvironment()): Logger {
  return pino({ name: component, level, base: { component } }, logDestination(logFormatFromEnvironment()));
}

/** FLB_LOG_LEVEL, `info` when unset; any other word is a usage error naming the levels. */
export function logLevelFromEnvironment(env: NodeJS.ProcessEnv = process.env): LevelWithSilent {
  const value = env.FLB_LOG_LEVEL?.trim().toLowerCase();
  if (!value) return 'info';
  if (!(LOG_LEVELS as readonly string[]).includes(value)) {
    throw new UsageError(`FLB_LOG_LEVEL=${env.FLB_LOG_LEVEL} is not a log level; use one of ${LOG_LEVELS.join(', ')}`);
  }
  return value as LevelWithSilent;
}

/** FLB_LOG_FORMAT when set; otherwise pretty on a terminal, JSON anywhere else (pods, files, pipes). */
export function logFormatFromEnvironment(env: NodeJS.ProcessEnv = process.env, stderrIsTerminal = Boolean(process.stderr.isTTY)): LogFormat {
  const value = env.FLB_LOG_FORMAT?.trim().toLowerCase();
  if (!value) return stderrIsTerminal ? 'pretty' : 'json';
  if (!(LOG_FORMATS as readonly string[]).includes(value)) {
    throw new UsageError(`FLB_LOG_FORMAT=${env.FLB_LOG_FORMAT} is not a log format; use one of ${LOG_FORMATS.join(', ')}`);
  }
  return value as LogFormat;
}

/** Checks both variables up front, so a command refuses a wrong one before doing anything. */
export function checkLogEnvironment(env: NodeJS.ProcessEnv = process.env): void {
  logLevelFromEnvironment(env);
  logFormatFromEnvironment(env, false);
}

/**
 * Synchronous in both formats: a command that logs and exits at once loses no line, and pretty
 * lines are formatted in this thread (pino's pretty transport would start a worker thread).
 */
export function logDestination(format: LogFormat, fd = 2): DestinationStream {
  if (format === 'pretty') {
    const prettify = loadPrettifier(fd);
    if (prettify) return { write: (line: string) => void writeSync(fd, prettify(line)) };
  }
  return pino.destination({ fd, sync: true });
}

let prettifierMissing = false;

function loadPrettifier(fd: number): ((line: string) => string) | undefined {
  try {
    // Loaded on demand (never at import, never bundled into the sidecar): see the file comment.
    const { prettyFactory } = createRequire(import.meta.url)('pino-pretty') as typeof PinoPretty;
    return prettyFactory({
      // NO_COLOR (no-color.org) turns colours off, as most terminal tools honour it.
      colorize: fd === 2 && Boolean(process.stderr.isTTY) && !process.env.NO_COLOR,
      translateTime: 'SYS:HH:MM:ss.l',
      ignore: 'pid,hostname,name,component',
      messageFormat: '{component}: {msg}',
    });
  } catch {
    // An install without its optional pieces (a slim image): JSON is still right, say so once.
    if (!prettifierMissing) writeSync(fd, 'flb: pino-pretty is not installed; logging JSON\n');
    prettifierMissing = true;
    return undefined;
  }
}

/** One line for an error, without its stack: its message, code, and those of its cause (fetch's "fetch failed" hides the reason there). */
export function describeError(error: unknown): string {
  const parts: string[] = [];
  for (let current: unknown = error, depth = 0; current !== undefined && current !== null && depth < 3; depth++) {
    if (current instanceof Error) {
      const code = (current as { code?: unknown }).code;
      parts.push(typeof code === 'string' && !current.message.includes(code) ? `${current.message} (${code})` : current.message);
      current = current.cause;
    } else {
      parts.push(String(current));
      break;
    }
  }
  return parts.join(': ');
}

export interface ConditionOptions {
  /** At most one reminder this often while a condition lasts; 60 s unless told. */
  reminderMs?: number;
  /** The clock (tests). */
  now?: () => number;
}

export interface ConditionReport {
  /** The error behind this attempt: logged as one line (describeError), never with its stack. */
  error?: unknown;
  /** `warn` unless told: a condition the system waits out (a codebase not published yet) is `info`. */
  level?: 'error' | 'warn' | 'info';
  [field: string]: unknown;
}

/**
 * Logs a condition that lasts while something retries (a peer away, a codebase not published):
 * one line when it starts or turns into another condition, then a reminder at most every
 * `reminderMs` while it lasts (with how long and how many attempts), and one line when it ends.
 * A loop that retries every half second writes a few lines a minute, not hundreds of stacks.
 */
export class ConditionLog {
  private condition?: { name: string; since: number; attempts: number; lastLogged: number; attemptsLogged: number };
  private readonly reminderMs: number;
  private readonly now: () => number;

  constructor(
    private readonly log: Logger,
    options: ConditionOptions = {},
  ) {
    this.reminderMs = options.reminderMs ?? 60_000;
    this.now = options.now ?? Date.now;
  }

  /** The condition now holding, if any. */
  get current(): string | undefined {
    return this.condition?.name;
  }

  /** An attempt failed with this condition (call it on every attempt): logged when new, then as a reminder now and then. */
  report(name: string, message: string, report: ConditionReport = {}): void {
    const { error, level = 'warn', ...fields } = report;
    const now = this.now();
    const line = { condition: name, ...(error === undefined ? {} : { error: describeError(error) }), ...fields };
    if (this.condition?.name !== name) {
      this.condition = { name, since: now, attempts: 1, lastLogged: now, attemptsLogged: 1 };
      this.log[level](line, message);
      return;
    }
    const condition = this.condition;
    condition.attempts++;
    if (now - condition.lastLogged < this.reminderMs) return;
    this.log[level](
      { ...line, forMs: now - condition.since, attempts: condition.attempts, attemptsSinceLastLine: condition.attempts - condition.attemptsLogged },
      message,
    );
    condition.lastLogged = now;
    condition.attemptsLogged = condition.attempts;
  }

  /** The condition ended (call it on every success): one line if one was holding, with how long it lasted. */
  clear(message: string, fields: Record<string, unknown> = {}): void {
    const condition = this.condition;
    if (!condition) return;
    this.condition = undefined;
    this.log.info({ condition: condition.name, lastedMs: this.now() - condition.since, attempts: condition.attempts, ...fields }, message);
  }
}

export type { Logger };
