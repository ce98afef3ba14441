import { afterEach, describe, expect, it } from '@jest/globals';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { API_VERSION, BridgeConfigSchema, type EurekaSinkConfig } from '../../../common/contract/index.js';
import { EurekaApi } from './api.js';

const servers: Server[] = [];
const apis: EurekaApi[] = [];
afterEach(async () => {
  for (const api of apis.splice(0)) api.close();
  for (const server of servers.splice(0)) await new Promise<void>((resolve) => server.close(() => resolve()));
});

/** A server answering under `base` only (404 elsewhere), recording `METHOD path body`. */
async function serve(base: string): Promise<{ url: string; seen: string[] }> {
  const seen: string[] = [];
  const server = createServer((req: IncomingMessage, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      seen.push(`${req.method} ${req.url} ${body}`.trim());
      if (!req.url!.startsWith(base)) res.writeHead(404).end();
      else if (req.method === 'POST') res.writeHead(204).end();
      else res.writeHead(200, { 'content-type': 'application/json' }).end('{"applications":{"application":[]}}');
    });
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen };
}

const api = (servers: string[]) => {
  const config = BridgeConfigSchema.parse({
    apiVersion: API_VERSION,
    kind: 'BridgeConfig',
    mesh: { file: '/x' },
    sources: [{ kind: 'kubernetes' }],
    sinks: [{ kind: 'eureka', servers, timeoutSeconds: 2 }],
  }).sinks[0] as EurekaSinkConfig;
  const made = new EurekaApi(config);
  apis.push(made);
  return made;
};

describe("the Eureka sink's client", () => {
  it('finds the base path of a server URL that has none (/eureka/, then /eureka/v2/), and writes under it', async () => {
    const netflix = await serve('/eureka/v2/');
    const client = api([netflix.url]);
    expect(await client.call('POST', 'apps/WEB', { instance: { app: 'WEB' } })).toEqual({ status: 204, body: '' });
    expect(netflix.seen).toEqual(['GET /eureka/apps', 'GET /eureka/v2/apps', 'POST /eureka/v2/apps/WEB {"instance":{"app":"WEB"}}']);
  });

  it('moves to the next peer when one cannot be reached, and stays there; says which failed when none answers', async () => {
    const up = await serve('/eureka/');
    const client = api(['http://127.0.0.1:1/eureka/', `${up.url}/eureka/`]);
    expect((await client.call('PUT', 'apps/WEB/a')).status).toBe(200);
    expect(client.address).toBe(`${up.url}/eureka/`);
    await client.call('DELETE', 'apps/WEB/a');
    expect(up.seen).toEqual(['PUT /eureka/apps/WEB/a', 'DELETE /eureka/apps/WEB/a']);
    const down = api(['http://127.0.0.1:1/eureka/', 'http://127.0.0.1:2/eureka/']);
    await expect(down.call('GET', 'apps')).rejects.toThrow(
      /no Eureka server answered: http:\/\/127\.0\.0\.1:1\/eureka\/: .*ECONNREFUSED.*; http:\/\/127\.0\.0\.1:2\/eureka\/: .*ECONNREFUSED/,
    );
  });

  it('returns what a server answers, 404 included: the sink decides what it means (a renewal answered 404 registers again)', async () => {
    const spring = await serve('/eureka/');
    const client = api([`${spring.url}/eureka/`]);
    expect((await client.call('PUT', '../elsewhere')).status).toBe(404);
  });
});
