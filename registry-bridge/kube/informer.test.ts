import { afterEach, describe, expect, it } from '@jest/globals';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';
import { createLogger } from '../../common/log.js';
import { Informer, type InformerEvent } from './informer.js';

// A fake apiserver for what a real one does rarely on demand: answer a watch with 410 Gone, go away
// and come back. The informer against the real apiserver is exercised by test-e2e/bridge.test.ts.
interface Item {
  name: string;
  rv: number;
  value: string;
}

class FakeApiserver {
  items = new Map<string, Item>();
  rv = 10;
  server?: Server;
  port = 0;
  lists = 0;
  watches: ServerResponse[] = [];
  /** A watch from a version older than this is answered 410 Gone. */
  compactedBelow = 0;
  listPages: number[] = [];

  object(item: Item) {
    return { metadata: { name: item.name, namespace: 'ns', resourceVersion: String(item.rv) }, value: item.value };
  }

  put(name: string, value: string) {
    const item = { name, rv: ++this.rv, value };
    this.items.set(name, item);
    for (const w of this.watches) w.write(`${JSON.stringify({ type: 'MODIFIED', object: this.object(item) })}\n`);
  }

  remove(name: string) {
    const item = this.items.get(name)!;
    this.items.delete(name);
    this.rv++;
    for (const w of this.watches) w.write(`${JSON.stringify({ type: 'DELETED', object: this.object(item) })}\n`);
  }

  async start(port = 0) {
    this.server = createServer((req: IncomingMessage, res: ServerResponse) => {
      const url = new URL(req.url!, 'http://x');
      if (url.searchParams.get('watch') === '1') {
        const from = Number(url.searchParams.get('resourceVersion'));
        res.writeHead(200, { 'content-type': 'application/json' });
        if (from < this.compactedBelow) {
          res.end(`${JSON.stringify({ type: 'ERROR', object: { kind: 'Status', code: 410, message: 'too old resource version' } })}\n`);
          return;
        }
        this.watches.push(res);
        res.on('close', () => (this.watches = this.watches.filter((w) => w !== res)));
        return;
      }
      this.lists++;
      const limit = Number(url.searchParams.get('limit'));
      const all = [...this.items.values()].sort((a, b) => a.name.localeCompare(b.name));
      const start = Number(url.searchParams.get('continue') || 0);
      const page = all.slice(start, start + limit);
      this.listPages.push(page.length);
      const next = start + limit < all.length ? String(start + limit) : undefined;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ metadata: { resourceVersion: String(this.rv), ...(next ? { continue: next } : {}) }, items: page.map((i) => this.object(i)) }));
    });
    await new Promise<void>((resolve) => this.server!.listen(port, '127.0.0.1', () => resolve()));
    this.port = (this.server!.address() as AddressInfo).port;
  }

  async stop() {
    for (const w of this.watches) w.destroy();
    this.server?.closeAllConnections();
    await new Promise((r) => this.server?.close(r));
  }
}

const kubeConfigFor = (port: number) => {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'fake', server: `http://127.0.0.1:${port}`, skipTLSVerify: true }],
    users: [{ name: 'u' }],
    contexts: [{ name: 'c', cluster: 'fake', user: 'u' }],
    currentContext: 'c',
  });
  return kc;
};

const until = async (what: string, check: () => boolean, ms = 5000) => {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

describe('the lean informer', () => {
  const log = createLogger('informer-test', 'silent');
  let fake: FakeApiserver;
  let informer: Informer<string> | undefined;
  afterEach(async () => {
    await informer?.stop();
    await fake?.stop();
  });

  const watchWith = (events: InformerEvent<string>[], pageSize = 2) =>
    new Informer<string>({
      kubeConfig: kubeConfigFor(fake.port),
      path: '/api/v1/things',
      transform: (raw) => (raw as { value: string }).value,
      onEvent: (e) => events.push(e),
      log,
      pageSize,
      maxBackoffMs: 100,
    });

  it('lists in pages, then follows the watch', async () => {
    fake = new FakeApiserver();
    for (const name of ['a', 'b', 'c', 'd', 'e']) fake.items.set(name, { name, rv: 1, value: `${name}1` });
    await fake.start();
    const events: InformerEvent<string>[] = [];
    informer = watchWith(events);
    informer.start();
    await until('synced', () => informer!.synced && fake.watches.length === 1);
    expect(fake.listPages).toEqual([2, 2, 1]);
    expect(events.map((e) => e.key)).toEqual(['ns/a', 'ns/b', 'ns/c', 'ns/d', 'ns/e']);
    fake.put('b', 'b2');
    fake.remove('c');
    await until('two watch events', () => events.length === 7);
    expect(events.slice(5).map((e) => [e.type, e.key, e.type === 'upsert' ? e.object : undefined])).toEqual([
      ['upsert', 'ns/b', 'b2'],
      ['delete', 'ns/c', undefined],
    ]);
    expect(informer.get('ns/b')).toBe('b2');
  });

  it('lists again after 410 Gone and emits only what changed meanwhile', async () => {
    fake = new FakeApiserver();
    for (const name of ['a', 'b', 'c']) fake.items.set(name, { name, rv: 1, value: `${name}1` });
    await fake.start();
    const events: InformerEvent<string>[] = [];
    informer = watchWith(events, 500);
    informer.start();
    await until('watching', () => fake.watches.length === 1);
    // Changes the informer never sees as events, then its watch is cut and its version compacted.
    fake.items.set('b', { name: 'b', rv: ++fake.rv, value: 'b2' });
    fake.items.delete('c');
    fake.items.set('d', { name: 'd', rv: ++fake.rv, value: 'd1' });
    fake.compactedBelow = fake.rv;
    const lists = fake.lists;
    for (const w of fake.watches) w.end();
    await until('a second list and a new watch', () => fake.lists === lists + 1 && fake.watches.length === 1);
    expect(informer.stats.relistsAfterGone).toBe(1);
    expect(
      events
        .slice(3)
        .map((e) => `${e.type} ${e.key}`)
        .sort(),
    ).toEqual(['delete ns/c', 'upsert ns/b', 'upsert ns/d']);
  });

  it('keeps everything while the apiserver is away, and deletes only what a later list no longer has', async () => {
    fake = new FakeApiserver();
    for (const name of ['a', 'b']) fake.items.set(name, { name, rv: 1, value: `${name}1` });
    await fake.start();
    const port = fake.port;
    const events: InformerEvent<string>[] = [];
    informer = watchWith(events);
    informer.start();
    await until('watching', () => fake.watches.length === 1);
    const items = fake.items;
    await fake.stop();
    await until('errors counted', () => informer!.stats.errors >= 2);
    expect(informer.size).toBe(2);
    expect(events.filter((e) => e.type === 'delete')).toEqual([]);
    expect(informer.stats.connected).toBe(false);

    fake = new FakeApiserver();
    fake.items = items;
    fake.items.delete('a');
    fake.rv = 100;
    fake.compactedBelow = 50;
    await fake.start(port);
    await until('back and watching', () => fake.watches.length === 1, 10_000);
    expect(events.filter((e) => e.type === 'delete').map((e) => e.key)).toEqual(['ns/a']);
    expect(informer.get('ns/b')).toBe('b1');
  });
});
