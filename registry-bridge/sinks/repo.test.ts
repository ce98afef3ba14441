import { afterEach, describe, expect, it } from '@jest/globals';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Service } from '../../common/contract/index.js';
import { createLogger } from '../../common/log.js';
import { RepoSink } from './repo.js';

// A repo that holds each publish until the test lets it land, for what the sink reports while a
// publish is in flight. The sink against the real repo is exercised by test-e2e/bridge.test.ts.
class HoldingRepo {
  server?: Server;
  url = '';
  published = 0;
  private created = false;
  private held: (() => void)[] = [];
  private arrivals: (() => void)[] = [];

  async start(): Promise<this> {
    this.server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  /** Resolves once a publish has arrived and is being held. */
  publishArrived(): Promise<void> {
    if (this.held.length > 0) return Promise.resolve();
    return new Promise((resolve) => this.arrivals.push(resolve));
  }

  /** Lets every held publish land. */
  release(): void {
    for (const land of this.held.splice(0)) land();
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    for await (const chunk of req) void chunk;
    const answer = (status: number, body = ''): void => void res.writeHead(status, { server: 'flb-repo', 'content-type': 'application/json' }).end(body);
    if (req.method === 'GET' && req.url === '/api/v1/repo/flb/mesh') {
      if (!this.created) return answer(404);
      return answer(200, JSON.stringify({ version: String(this.published), files: [], editFiles: [], erasedFiles: [] }));
    }
    if (req.method === 'POST' && req.url === '/api/v1/repo/flb/mesh') {
      this.created = true;
      return answer(201);
    }
    if (req.method === 'PATCH' && req.url === '/api/v1/repo/flb/mesh') {
      await new Promise<void>((land) => {
        this.held.push(land);
        for (const arrived of this.arrivals.splice(0)) arrived();
      });
      this.published++;
      return answer(201);
    }
    answer(404);
  }

  async stop(): Promise<void> {
    this.release();
    this.server?.closeAllConnections();
    await new Promise((resolve) => this.server?.close(resolve));
  }
}

const log = createLogger('repo-sink-test', 'silent');
const service = (id: string) => ({ id }) as unknown as Service;

describe('the repo sink', () => {
  let repo: HoldingRepo;
  let sink: RepoSink | undefined;
  afterEach(async () => {
    await sink?.stop();
    await repo.stop();
  });

  it('counts a publish its own stop cut short as no failure', async () => {
    repo = await new HoldingRepo().start();
    sink = new RepoSink({ kind: 'repo', name: 'repo', url: repo.url }, log);
    sink.setService('a.shop', service('a.shop'), '{"id":"a.shop"}\n');
    await repo.publishArrived();
    await sink.stop();
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(sink.status()).toMatchObject({ failures: 0 });
    expect(sink.status().lastError).toBeUndefined();
  });

  it('reports changes as pending while their publish is in flight, and none once it landed', async () => {
    repo = await new HoldingRepo().start();
    sink = new RepoSink({ kind: 'repo', name: 'repo', url: repo.url }, log);
    sink.setService('a.shop', service('a.shop'), '{"id":"a.shop"}\n');
    sink.setService('b.shop', service('b.shop'), '{"id":"b.shop"}\n');
    await repo.publishArrived();
    expect(sink.status()).toMatchObject({ pending: 2, writes: 0 });

    // Told while that publish is in flight: it goes out in the next one.
    sink.setService('c.shop', service('c.shop'), '{"id":"c.shop"}\n');
    repo.release();
    await repo.publishArrived();
    expect(sink.status()).toMatchObject({ pending: 3, writes: 1 });

    repo.release();
    await sink.settled();
    // The sink hears that the publisher settled in a later microtask than the test does.
    await new Promise((resolve) => setImmediate(resolve));
    expect(sink.status()).toMatchObject({ pending: 0, writes: 2 });
    expect(sink.status().lastWriteAt).toBeGreaterThan(0);
  });
});
