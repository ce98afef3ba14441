import { afterEach, describe, expect, it } from '@jest/globals';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ConsulSinkConfig } from '../../../common/contract/index.js';
import { parseSinkConfig } from '../testing/sink-tests.js';
import { ConsulAnswerTooLargeError, ConsulApi } from './api.js';

const servers: Server[] = [];
afterEach(() => {
  for (const server of servers.splice(0)) server.close();
});

/** A Consul stand-in answering every GET with a JSON string of `bytes` characters. */
async function answering(bytes: number): Promise<string> {
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify('x'.repeat(bytes - 2)));
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

describe("the Consul sink's API client", () => {
  it('reads an answer up to its limit, and refuses a larger one with an error saying so', async () => {
    const config = (address: string) =>
      parseSinkConfig<ConsulSinkConfig>({ kind: 'consul', address: 'http://consul-source:8500' }, { kind: 'consul', address }).config;
    const within = new ConsulApi(config(await answering(4096)), 4096);
    await expect(within.call('GET', '/v1/catalog/node-services/flb-east')).resolves.toHaveLength(4094);
    within.close();
    const over = new ConsulApi(config(await answering(4097)), 4096);
    const refused = over.call('GET', '/v1/catalog/node-services/flb-east');
    await expect(refused).rejects.toBeInstanceOf(ConsulAnswerTooLargeError);
    await expect(refused).rejects.toThrow('GET /v1/catalog/node-services/flb-east: the answer passed 4096 bytes; refused');
    over.close();
  });
});
