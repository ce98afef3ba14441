import type * as Http from 'node:http';
import type { Agent, IncomingHttpHeaders, IncomingMessage } from 'node:http';

/** What the repo worker reads of an answer: the subset of fetch's Response it uses. */
export interface SmallResponse {
  readonly status: number;
  readonly ok: boolean;
  readonly headers: { get(name: string): string | null };
  text(): string;
  json(): unknown;
  body: Buffer;
}

export interface SmallRequest {
  method?: string;
  headers?: Record<string, string>;
  body?: string;
  signal?: AbortSignal;
  /** The whole exchange, answer included (a long poll's hold time plus a margin). */
  timeoutMs: number;
}

type HttpModule = typeof Http;

/**
 * A keep-alive HTTP(S) client over node:http/node:https, for the sidecar's repo worker. Written
 * instead of calling fetch because fetch loads undici, about 10 MiB of memory in every sidecar
 * (measured: a bare Node 42 MiB, after one fetch() 52 MiB); node:http is loaded anyway, node:https
 * only for an https repo. Trusts what node:https trusts (NODE_EXTRA_CA_CERTS included).
 */
export class KeepAliveClient {
  private readonly agents = new Map<string, Agent>();

  async request(url: URL, init: SmallRequest): Promise<SmallResponse> {
    const http: HttpModule = url.protocol === 'https:' ? ((await import('node:https')) as unknown as HttpModule) : await import('node:http');
    let agent = this.agents.get(url.protocol);
    if (!agent) this.agents.set(url.protocol, (agent = new http.Agent({ keepAlive: true })));
    try {
      return await exchange(http, agent, url, init);
    } catch (error) {
      // A kept-alive connection the server had just closed: once more, on a new one (Node's advice).
      if ((error as { reusedSocket?: boolean }).reusedSocket && (error as NodeJS.ErrnoException).code === 'ECONNRESET') return exchange(http, agent, url, init);
      throw error;
    }
  }

  close(): void {
    for (const agent of this.agents.values()) agent.destroy();
    this.agents.clear();
  }
}

function exchange(http: HttpModule, agent: Agent, url: URL, init: SmallRequest): Promise<SmallResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      { method: init.method ?? 'GET', headers: init.headers, agent, ...(init.signal ? { signal: init.signal } : {}) },
      (res: IncomingMessage) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve(answer(res.statusCode ?? 0, res.headers, Buffer.concat(chunks))));
        res.on('error', reject);
      },
    );
    req.setTimeout(init.timeoutMs, () => req.destroy(new Error(`no answer from ${url.origin} within ${init.timeoutMs} ms`)));
    req.on('error', (error) => reject(Object.assign(error, { reusedSocket: req.reusedSocket })));
    req.end(init.body);
  });
}

function answer(status: number, headers: IncomingHttpHeaders, body: Buffer): SmallResponse {
  return {
    status,
    ok: status >= 200 && status < 300,
    headers: {
      get(name: string) {
        const value = headers[name.toLowerCase()];
        return value === undefined ? null : Array.isArray(value) ? value.join(', ') : value;
      },
    },
    body,
    text: () => body.toString('utf8'),
    json: () => JSON.parse(body.toString('utf8')) as unknown,
  };
}
