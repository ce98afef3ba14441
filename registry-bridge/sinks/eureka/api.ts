// A Eureka server's REST API as the Eureka sink writes it: register (POST apps/<APP>), renew (PUT
// apps/<APP>/<id>), cancel (DELETE apps/<APP>/<id>) and one read of /apps. One keep-alive agent
// whose sockets are the sink's concurrency limit, the sink's basic auth and TLS, a bounded answer
// and a timeout on every call (a server that hangs must not hold a sync forever). Peers are asked
// in order: one that cannot be reached is left for the next (they replicate what one is told).
import { readFileSync } from 'node:fs';
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { createGunzip } from 'node:zlib';
import type { EurekaSinkConfig } from '../../../common/contract/index.js';

const MAX_ANSWER_BYTES = 512 * 1024 * 1024;
/** Base paths tried, in order, for a server URL with none: Spring Cloud's, then Netflix's. */
const BASE_PATHS = ['/eureka/', '/eureka/v2/'];

export class EurekaWriteError extends Error {
  override readonly name = 'EurekaWriteError';
  constructor(
    message: string,
    /** The HTTP status when the server answered; undefined: no server could be reached. */
    readonly status?: number,
  ) {
    super(message);
  }
}

export interface EurekaAnswer {
  status: number;
  body: string;
}

export type EurekaCall = (method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, body?: unknown) => Promise<EurekaAnswer>;

interface Server {
  url: string;
  /** Where requests go, ending in `/`; undefined until a server URL without a path found its base. */
  base?: string;
  candidates: string[];
}

export class EurekaApi {
  private readonly servers: Server[];
  private current = 0;
  private readonly agent: HttpAgent | HttpsAgent;

  constructor(private readonly config: EurekaSinkConfig) {
    this.servers = config.servers.map((url) => {
      const parsed = new URL(url);
      if (parsed.pathname === '/' || parsed.pathname === '') return { url, candidates: BASE_PATHS.map((path) => new URL(path, parsed).toString()) };
      const base = url.endsWith('/') ? url : `${url}/`;
      return { url, base, candidates: [base] };
    });
    const https = this.servers.some((s) => s.url.startsWith('https:'));
    const options = { keepAlive: true, maxSockets: config.writeConcurrency };
    if (!https) this.agent = new HttpAgent(options);
    else {
      const read = (what: string, file: string | undefined) => {
        if (file === undefined) return undefined;
        try {
          return readFileSync(file, 'utf8');
        } catch (error) {
          throw new EurekaWriteError(`eureka sink ${config.name}: cannot read tls.${what} ${file}: ${(error as Error).message}; check sinks[].tls`);
        }
      };
      const [ca, cert, key] = [read('caFile', config.tls?.caFile), read('certFile', config.tls?.certFile), read('keyFile', config.tls?.keyFile)];
      this.agent = new HttpsAgent({ ...options, ...(ca ? { ca } : {}), ...(cert && key ? { cert, key } : {}) });
    }
  }

  /** The peer written to now. */
  get address(): string {
    return this.servers[this.current]!.url;
  }

  /**
   * One request to the current peer, else each next one while none can be reached. Any HTTP answer
   * is returned (the caller decides what 404 means); a failure to reach every peer throws.
   */
  call: EurekaCall = async (method, path, body) => {
    const failures: string[] = [];
    for (let tried = 0; tried < this.servers.length; tried++) {
      const index = (this.current + tried) % this.servers.length;
      const server = this.servers[index]!;
      try {
        const base = server.base ?? (await this.findBase(server));
        const answer = await this.request(method, new URL(path, base), body);
        this.current = index;
        return answer;
      } catch (error) {
        failures.push(`${server.url}: ${(error as Error).message}`);
      }
    }
    throw new EurekaWriteError(failures.length === 1 ? failures[0]! : `no Eureka server answered: ${failures.join('; ')}`);
  };

  close(): void {
    this.agent.destroy();
  }

  private async findBase(server: Server): Promise<string> {
    for (const base of server.candidates) {
      const answer = await this.request('GET', new URL('apps', base));
      if (answer.status === 200) return (server.base = base);
    }
    throw new Error(`no Eureka registry under ${server.candidates.map((c) => new URL(c).pathname).join(' or ')}: name the base path in the server URL`);
  }

  private request(method: string, url: URL, body?: unknown): Promise<EurekaAnswer> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const headers: Record<string, string | number> = { accept: 'application/json', 'accept-encoding': 'gzip' };
    if (payload) Object.assign(headers, { 'content-type': 'application/json', 'content-length': payload.length });
    if (this.config.basicAuth) {
      const { username, passwordFile } = this.config.basicAuth;
      let password: string;
      try {
        password = readFileSync(passwordFile, 'utf8').replace(/\r?\n$/, '');
      } catch (error) {
        return Promise.reject(new Error(`cannot read basicAuth.passwordFile ${passwordFile}: ${(error as Error).message}`));
      }
      headers.authorization = `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`;
    }
    const timeoutMs = this.config.timeoutSeconds * 1000;
    const where = `${method} ${url.pathname}`;
    return new Promise((resolve, reject) => {
      const req = (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, { method, headers, agent: this.agent }, (res) => {
        readBody(res).then(
          (text) => resolve({ status: res.statusCode ?? 0, body: text }),
          (error: Error) => reject(new Error(`${where}: ${error.message}`)),
        );
      });
      req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${Math.round(timeoutMs / 1000)} s`)));
      req.on('error', (error: NodeJS.ErrnoException) => reject(new Error(`${where}: ${error.code ? `${error.code} (${error.message})` : error.message}`)));
      req.end(payload);
    });
  }
}

function readBody(res: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const stream = (res.headers['content-encoding'] ?? '').toLowerCase() === 'gzip' ? res.pipe(createGunzip()) : res;
    const chunks: Buffer[] = [];
    let size = 0;
    stream.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_ANSWER_BYTES) {
        res.destroy();
        reject(new Error(`the answer passed ${MAX_ANSWER_BYTES} bytes; refused`));
      } else chunks.push(chunk);
    });
    stream.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    stream.on('error', (error: Error) => reject(new Error(`the answer broke off: ${error.message}`)));
    res.on('aborted', () => reject(new Error('the answer broke off')));
  });
}
