// Consul's HTTP API as the Consul source uses it: GETs with the ACL token, the datacenter and
// blocking-query parameters, answering the JSON body and X-Consul-Index. On node:http rather than
// the `consul` npm client: that client reads an answer whole with no size limit (a runaway or
// hostile registry's answer must be refused at a bound, not buffered), and its watch resets the
// index to 0 and re-asks at once, where Consul's guidance is never below 1 and rate-limited
// (index.ts). One keep-alive agent bounds the connections held to Consul.
import { request as httpRequest, type Agent as HttpAgent } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { consulAgent, readConsulToken } from '../../core/consul-http.js';
import type { ConsulSourceConfig } from '../../../common/contract/index.js';

export class ConsulError extends Error {
  constructor(
    message: string,
    /** The HTTP status, when Consul answered. */
    readonly status?: number,
  ) {
    super(message);
    this.name = 'ConsulError';
  }

  /** Consul refused the token (403: ACL not found, or permission denied). */
  get refused(): boolean {
    return this.status === 403;
  }
}

export interface ConsulAnswer {
  /** X-Consul-Index; undefined when Consul sent none. */
  index?: bigint;
  body: unknown;
}

export interface ConsulGet {
  path: string;
  query?: Record<string, string>;
  /** A blocking query: wait up to this for a change past `index`. */
  block?: { index: bigint; waitSeconds: number };
  signal?: AbortSignal;
}

export class ConsulClient {
  private readonly agent: HttpAgent;
  private readonly base: URL;
  private token?: string;

  constructor(
    private readonly config: ConsulSourceConfig,
    /** Blocking queries running at once besides the fetches: the connection bound is their sum. */
    blockingQueries: number,
  ) {
    this.base = new URL(config.address);
    this.agent = consulAgent(
      this.base,
      config.tls,
      config.fetchConcurrency + blockingQueries,
      (detail) => new ConsulError(`${detail}; check sources[].tls of source ${config.name}`),
    );
    this.reloadToken();
  }

  /** Reads the token file again (after Consul refused the token: the Secret may have rotated). */
  reloadToken(): void {
    if (!this.config.tokenFile) return;
    this.token = readConsulToken(this.config.tokenFile, (detail) => new ConsulError(`${detail}; check sources[].tokenFile`));
  }

  get(request: ConsulGet): Promise<ConsulAnswer> {
    const url = new URL(request.path, this.base);
    for (const [key, value] of Object.entries(request.query ?? {})) url.searchParams.set(key, value);
    // Consul adds up to wait/16 of jitter; the answer then still has to arrive.
    let timeoutMs = this.config.timeoutSeconds * 1000;
    if (request.block) {
      url.searchParams.set('index', String(request.block.index));
      url.searchParams.set('wait', `${request.block.waitSeconds}s`);
      timeoutMs += Math.ceil(request.block.waitSeconds * 1000 * (17 / 16));
    }
    const limit = this.config.maxResponseBytes;
    const where = `${url.pathname}${url.search}`;
    return new Promise((resolve, reject) => {
      // Settled once: a refused answer is abandoned mid-stream, and whatever its sockets say after is moot.
      let done = false;
      const fail = (error: Error) => {
        if (done) return;
        done = true;
        reject(error instanceof ConsulError ? error : new ConsulError(`GET ${where}: ${error.message}`));
      };
      const req = (this.base.protocol === 'https:' ? httpsRequest : httpRequest)(
        url,
        {
          agent: this.agent,
          headers: { accept: 'application/json', ...(this.token ? { 'x-consul-token': this.token } : {}) },
          ...(request.signal ? { signal: request.signal } : {}),
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (chunk: Buffer) => {
            if (done) return;
            size += chunk.length;
            if (size > limit) {
              fail(new ConsulError(`GET ${where}: the answer passed maxResponseBytes (${limit} bytes); refused`));
              res.destroy();
              return;
            }
            chunks.push(chunk);
          });
          res.on('error', fail);
          res.on('end', () => {
            if (done) return;
            const text = Buffer.concat(chunks).toString('utf8');
            const status = res.statusCode ?? 0;
            if (status !== 200) {
              const what = status === 403 ? 'the ACL token was refused' : `answered ${status}`;
              fail(new ConsulError(`GET ${where}: ${what}: ${text.trim().slice(0, 200)}`, status));
              return;
            }
            let body: unknown;
            try {
              body = JSON.parse(text);
            } catch (error) {
              fail(new ConsulError(`GET ${where}: not JSON (${(error as Error).message}, ${size} bytes)`));
              return;
            }
            const header = res.headers['x-consul-index'];
            let index: bigint | undefined;
            if (typeof header === 'string' && /^\d{1,20}$/.test(header)) index = BigInt(header);
            done = true;
            resolve(index === undefined ? { body } : { index, body });
          });
        },
      );
      req.setTimeout(timeoutMs, () => req.destroy(new ConsulError(`GET ${where}: no answer within ${Math.round(timeoutMs / 1000)} s`)));
      req.on('error', fail);
      req.end();
    });
  }

  close(): void {
    this.agent.destroy();
  }
}
