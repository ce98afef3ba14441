import { afterAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync, openSync, closeSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { UsageError } from './errors.js';
import { ConditionLog, describeError, logDestination, logFormatFromEnvironment, logLevelFromEnvironment } from './log.js';

const dir = mkdtempSync(join(tmpdir(), 'flb-log-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('FLB_LOG_LEVEL and FLB_LOG_FORMAT', () => {
  it('refuses a level that is not one, naming the levels (was: verbose silently became info)', () => {
    expect(() => logLevelFromEnvironment({ FLB_LOG_LEVEL: 'verbose' })).toThrow(
      new UsageError('FLB_LOG_LEVEL=verbose is not a log level; use one of fatal, error, warn, info, debug, trace, silent'),
    );
    expect(logLevelFromEnvironment({})).toBe('info');
    expect(logLevelFromEnvironment({ FLB_LOG_LEVEL: 'DEBUG' })).toBe('debug');
  });

  it('is readable on a terminal and JSON anywhere else, unless FLB_LOG_FORMAT says', () => {
    expect(logFormatFromEnvironment({}, true)).toBe('pretty');
    expect(logFormatFromEnvironment({}, false)).toBe('json');
    expect(logFormatFromEnvironment({ FLB_LOG_FORMAT: 'json' }, true)).toBe('json');
    expect(logFormatFromEnvironment({ FLB_LOG_FORMAT: 'pretty' }, false)).toBe('pretty');
    expect(() => logFormatFromEnvironment({ FLB_LOG_FORMAT: 'text' }, false)).toThrow('FLB_LOG_FORMAT=text is not a log format; use one of json, pretty');
  });

  it('pretty lines carry the level name, the component and the message, not JSON', () => {
    const file = join(dir, 'pretty.log');
    const fd = openSync(file, 'w');
    const log = pino({ base: { component: 'repo' } }, logDestination('pretty', fd));
    log.warn({ codebases: 3 }, 'cannot reach etcd');
    closeSync(fd);
    const text = readFileSync(file, 'utf8');
    expect(text).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] WARN: repo: cannot reach etcd\n {4}codebases: 3\n$/);
  });
});

describe('describeError', () => {
  it('is one line with the codes, including the cause fetch hides its reason in', () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6060'), { code: 'ECONNREFUSED' });
    expect(describeError(new TypeError('fetch failed', { cause: refused }))).toBe('fetch failed: connect ECONNREFUSED 127.0.0.1:6060');
    expect(describeError(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }))).toBe('socket hang up (ECONNRESET)');
    expect(describeError('plain')).toBe('plain');
  });
});

describe('ConditionLog', () => {
  function recorder() {
    const lines: Record<string, unknown>[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
    let now = 1_000_000;
    const conditions = new ConditionLog(log, { now: () => now });
    return { lines, conditions, advance: (ms: number) => (now += ms) };
  }

  it('an outage retried every 0.3-2 s for 3 minutes: one line, a reminder a minute, one line when it ends, no stack', () => {
    const { lines, conditions, advance } = recorder();
    const error = new Error('connect ECONNREFUSED 127.0.0.1:2379');
    let attempts = 0;
    for (let elapsed = 0; elapsed < 180_000; attempts++) {
      conditions.report('etcd-unreachable', 'cannot reach etcd; serving what this replica has', { error });
      const wait = 300 + ((attempts * 7919) % 1700);
      advance(wait);
      elapsed += wait;
    }
    conditions.clear('etcd reachable again');
    expect(attempts).toBeGreaterThan(100);
    expect(lines.map((l) => [l.level, l.msg, l.forMs === undefined ? 'first' : 'reminder'])).toEqual([
      [40, 'cannot reach etcd; serving what this replica has', 'first'],
      [40, 'cannot reach etcd; serving what this replica has', 'reminder'],
      [40, 'cannot reach etcd; serving what this replica has', 'reminder'],
      [30, 'etcd reachable again', 'first'],
    ]);
    expect(lines[0]).toMatchObject({ condition: 'etcd-unreachable', error: 'connect ECONNREFUSED 127.0.0.1:2379' });
    expect(lines[1]!.forMs).toBeGreaterThanOrEqual(60_000);
    expect(lines[3]).toMatchObject({ condition: 'etcd-unreachable', attempts });
    expect(lines[3]!.lastedMs).toBeGreaterThanOrEqual(178_000);
    expect(JSON.stringify(lines)).not.toContain('    at ');
  });

  it('a change of condition is logged at once; a success without a condition logs nothing', () => {
    const { lines, conditions, advance } = recorder();
    conditions.clear('fine');
    conditions.report('not-published', 'codebase not published yet; waiting for the control plane', { level: 'info' });
    advance(500);
    conditions.report('not-published', 'codebase not published yet; waiting for the control plane', { level: 'info' });
    advance(500);
    conditions.report('unreachable', 'repo unreachable; keeping the last configuration', { error: new Error('timeout') });
    expect(conditions.current).toBe('unreachable');
    expect(lines.map((l) => [l.level, l.condition])).toEqual([
      [30, 'not-published'],
      [40, 'unreachable'],
    ]);
  });
});
