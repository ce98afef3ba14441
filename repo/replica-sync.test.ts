import { describe, expect, it } from '@jest/globals';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { startReplicaSync, type ReplicaSyncOptions } from './replica-sync.js';
import type { CodebaseChanges, CodebaseWatchHandlers } from './store/etcd.js';
import type { CodebaseRecord } from './store/store.js';

/**
 * The replica's side of the watch, against a stand-in for etcd whose watch the test drives: the
 * order batches are applied in, what a compaction does, what etcd going away looks like. The same
 * against a real etcd cluster is in test-e2e/repo-etcd.test.ts.
 */
function fakeEtcd() {
  const watches: { from: string; handlers: CodebaseWatchHandlers; cancelled: boolean }[] = [];
  const etcd = {
    current: '10' as string | Error,
    latestRevision: '10',
    errors: new Map<string, number>(),
    prefetchBlobs: async () => {},
    revision: async () => {
      if (etcd.current instanceof Error) throw etcd.current;
      return etcd.current;
    },
    /** Keys of the repo written past the revision asked about, as the stand-in says. */
    pending: 0,
    changesAfter: async () => ({ revision: await etcd.revision(), count: etcd.pending }),
    watchCodebases: (from: string, handlers: CodebaseWatchHandlers) => {
      const watch = { from, handlers, cancelled: false };
      watches.push(watch);
      return { cancel: async () => void (watch.cancelled = true) };
    },
  };
  return { etcd, watches, last: () => watches.at(-1)!.handlers };
}

const changes = (revision: string, names: string[], recordRevisions: Record<string, string> = {}): CodebaseChanges => ({
  names: new Set(names),
  revision,
  recordRevisions: new Map(Object.entries(recordRevisions)),
});

function collectingLog() {
  const lines: { msg: string; level: number }[] = [];
  const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as { msg: string; level: number }) });
  return { log, lines };
}

describe('a replica following etcd through a watch', () => {
  it('applies batches in the order etcd sent them, one after another, retrying a read that failed', async () => {
    const { etcd, last } = fakeEtcd();
    const reloads: string[][] = [];
    let failNext = true;
    const records = new Map<string, Partial<CodebaseRecord>>([['/mine', { revision: '12' }]]);
    const repo: ReplicaSyncOptions['repo'] = {
      refresh: async () => [],
      reload: async (names) => {
        const list = [...names];
        if (list.includes('/b') && failNext) {
          failNext = false;
          throw new Error('etcd went away mid-read');
        }
        reloads.push(list);
        return list;
      },
      get: (name) => records.get(name) as CodebaseRecord | undefined,
      list: () => [...records.keys()],
    };
    const sync = startReplicaSync({ etcd, repo, since: '10', log: pino({ level: 'silent' }) });
    last().connected();
    etcd.latestRevision = '14';
    last().changes(changes('11', ['/a']));
    last().changes(changes('13', ['/b', '/mine'], { '/mine': '12' }));
    last().changes(changes('14', ['/a']));
    expect(sync.health()).toMatchObject({ appliedRevision: '10' });
    await sync.settled();
    // /mine's record was already at the event's revision (this replica's own write): not read again.
    expect(reloads).toEqual([['/a'], ['/b'], ['/a']]);
    expect(sync.health()).toMatchObject({ appliedRevision: '14', etcdRevision: '14', lagRevisions: 0, reachable: true });
    await sync.stop();
  });

  it('after a compaction reloads everything once and watches again from the revision read before the reload', async () => {
    const { etcd, watches, last } = fakeEtcd();
    let refreshes = 0;
    const repo: ReplicaSyncOptions['repo'] = { refresh: async () => (refreshes++, []), reload: async () => [], get: () => undefined, list: () => [] };
    const sync = startReplicaSync({ etcd, repo, since: '10', log: pino({ level: 'silent' }) });
    expect(watches.map((w) => w.from)).toEqual(['11']);
    etcd.current = '40';
    last().compacted();
    await sync.settled();
    expect(refreshes).toBe(1);
    expect(watches.map((w) => w.from)).toEqual(['11', '41']);
    expect(sync.health()).toMatchObject({ reloads: 1, appliedRevision: '40' });
    const registry = new Registry();
    sync.registerMetrics(registry);
    etcd.errors.set('write', 3);
    const metrics = await registry.metrics();
    expect(metrics).toContain('flb_repo_etcd_reloads_total 1');
    expect(metrics).toContain('flb_repo_etcd_errors_total{operation="write"} 3');
    await sync.stop();
    expect(watches[1]!.cancelled).toBe(true);
  });

  it('retries a reload etcd could not answer, and watches again only once it has', async () => {
    const { etcd, watches, last } = fakeEtcd();
    let refreshes = 0;
    const repo: ReplicaSyncOptions['repo'] = { refresh: async () => (refreshes++, []), reload: async () => [], get: () => undefined, list: () => [] };
    const sync = startReplicaSync({ etcd, repo, since: '10', log: pino({ level: 'silent' }) });
    etcd.current = new Error('connection refused');
    last().compacted();
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(refreshes).toBe(0);
    expect(watches).toHaveLength(1);
    expect(sync.health()).toMatchObject({ reachable: false, lastError: expect.stringContaining('connection refused') });
    etcd.current = '50';
    await sync.settled();
    expect(refreshes).toBe(1);
    expect(watches.map((w) => w.from)).toEqual(['11', '51']);
    await sync.stop();
  });

  it('with etcd away says so once in the log and in its health, and once when it is back', async () => {
    const { etcd, last } = fakeEtcd();
    const { log, lines } = collectingLog();
    const repo: ReplicaSyncOptions['repo'] = { refresh: async () => [], reload: async () => [], get: () => undefined, list: () => [] };
    const sync = startReplicaSync({ etcd, repo, since: '10', log, probeIntervalMs: 10 });
    last().connected();
    expect(sync.health()).toMatchObject({ reachable: true, watching: true });
    etcd.current = new Error('14 UNAVAILABLE: No connection established');
    last().disconnected(new Error('14 UNAVAILABLE: No connection established'));
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(sync.health()).toMatchObject({ reachable: false, watching: false, unreachableSince: expect.any(String) });
    etcd.current = '10';
    last().connected();
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(sync.health()).toMatchObject({ reachable: true });
    expect(sync.health().unreachableSince).toBeUndefined();
    expect(lines.filter((l) => l.msg.startsWith('cannot reach etcd'))).toHaveLength(1);
    expect(lines.filter((l) => l.msg === 'etcd reachable again; replicas in sync')).toHaveLength(1);
    await sync.stop();
  });

  it('starts the watch again when etcd answers but the watch stays down, from the revision applied', async () => {
    const { etcd, watches, last } = fakeEtcd();
    const repo: ReplicaSyncOptions['repo'] = { refresh: async () => [], reload: async () => [], get: () => undefined, list: () => [] };
    const sync = startReplicaSync({ etcd, repo, since: '10', log: pino({ level: 'silent' }), probeIntervalMs: 10, watchRestartMs: 100 });
    last().connected();
    last().changes(changes('12', []));
    await sync.settled();
    last().disconnected(new Error('stream ended'));
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect(watches).toHaveLength(1);
    while (watches.length < 2) await new Promise((resolve) => setTimeout(resolve, 5));
    last().connected();
    await new Promise((resolve) => setTimeout(resolve, 150));
    // Started once more, and not again once it is up.
    expect(watches.map((w) => [w.from, w.cancelled])).toEqual([
      ['11', true],
      ['13', false],
    ]);
    expect(sync.health()).toMatchObject({ reachable: true, watching: true });
    await sync.stop();
  });

  it('counts as lag only revisions past which the repo’s own keys changed, and restarts a watch that never delivers them', async () => {
    const { etcd, watches, last } = fakeEtcd();
    const repo: ReplicaSyncOptions['repo'] = { refresh: async () => [], reload: async () => [], get: () => undefined, list: () => [] };
    const sync = startReplicaSync({ etcd, repo, since: '10', log: pino({ level: 'silent' }), probeIntervalMs: 10, watchRestartMs: 150 });
    last().connected();
    // Others' writes moved etcd to 20: nothing for this replica, no lag.
    etcd.current = '20';
    await new Promise((resolve) => setTimeout(resolve, 40));
    expect(sync.health()).toMatchObject({ lagRevisions: 0, appliedRevision: '10' });
    // Two of the repo's keys written past 10: 10 revisions behind until the watch delivers them.
    etcd.pending = 2;
    await new Promise((resolve) => setTimeout(resolve, 40));
    expect(sync.health()).toMatchObject({ lagRevisions: 10 });
    expect(watches).toHaveLength(1);
    // The watch never delivers them: it is started again, from the revision applied.
    while (watches.length < 2) await new Promise((resolve) => setTimeout(resolve, 5));
    expect(watches.map((w) => [w.from, w.cancelled])).toEqual([
      ['11', true],
      ['11', false],
    ]);
    last().connected();
    last().changes(changes('20', ['/a']));
    etcd.pending = 0;
    await sync.settled();
    await new Promise((resolve) => setTimeout(resolve, 40));
    expect(sync.health()).toMatchObject({ lagRevisions: 0, appliedRevision: '20' });
    await sync.stop();
  });

  it('reloads once for a compaction however many watches report it, and ignores a replaced watch', async () => {
    const { etcd, watches } = fakeEtcd();
    let refreshes = 0;
    const repo: ReplicaSyncOptions['repo'] = { refresh: async () => (refreshes++, []), reload: async () => [], get: () => undefined, list: () => [] };
    const sync = startReplicaSync({ etcd, repo, since: '10', log: pino({ level: 'silent' }) });
    const first = watches[0]!.handlers;
    etcd.current = '30';
    first.compacted();
    first.compacted();
    await sync.settled();
    expect(refreshes).toBe(1);
    // The first watch, replaced, says it is down: the new one speaks for the stream.
    watches[1]!.handlers.connected();
    first.disconnected(new Error('old stream ended'));
    first.compacted();
    await sync.settled();
    expect(refreshes).toBe(1);
    expect(sync.health()).toMatchObject({ watching: true, reloads: 1 });
    await sync.stop();
  });
});
