import { afterEach, describe, expect, it } from '@jest/globals';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ConsulSinkConfig } from '../../../common/contract/index.js';
import { parseSinkConfig } from '../testing/sink-tests.js';
import { ConsulAnswerTooLargeError, ConsulApi, ConsulSlowError } from './api.js';

const servers: Server[] = [];
afterEach(() => {
  for (const server of servers.splice(0)) server.close();
});

/** A Consul stand-in answering every request with a JSON string of `bytes` characters, or never. */
async function answering(bytes: number | 'never'): Promise<string> {
  const server = createServer((_req, res) => {
    if (bytes === 'never') return;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify('x'.repeat(bytes - 2)));
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

const config = (address: string, over: Record<string, unknown> = {}) =>
  parseSinkConfig<ConsulSinkConfig>({ kind: 'consul', address: 'http://consul-source:8500' }, { kind: 'consul', address, ...over }).config;

describe("the Consul sink's API client", () => {
  it('reads an answer up to its limit, and refuses a larger one with an error saying so', async () => {
    const within = new ConsulApi(config(await answering(4096)), 4096);
    await expect(within.call('GET', '/v1/catalog/node-services/flb-east')).resolves.toHaveLength(4094);
    within.close();
    const over = new ConsulApi(config(await answering(4097)), 4096);
    const refused = over.call('GET', '/v1/catalog/node-services/flb-east');
    await expect(refused).rejects.toBeInstanceOf(ConsulAnswerTooLargeError);
    await expect(refused).rejects.toThrow('GET /v1/catalog/node-services/flb-east: the answer passed 4096 bytes; refused');
    over.close();
  });

  it('tells a Consul that took the request and did not answer in time (slow) from one it could not reach', async () => {
    const api = new ConsulApi(config(await answering('never'), { timeoutSeconds: 1 }));
    const call = api.call('PUT', '/v1/txn', []);
    await expect(call).rejects.toBeInstanceOf(ConsulSlowError);
    await expect(call).rejects.toThrow('PUT /v1/txn: no answer within 1 s');
    api.close();
    const away = new ConsulApi(config('http://127.0.0.1:1'));
    const refused = away.call('PUT', '/v1/txn', []);
    await expect(refused).rejects.toThrow(/ECONNREFUSED/);
    await expect(refused).rejects.not.toBeInstanceOf(ConsulSlowError);
    away.close();
  });
});
