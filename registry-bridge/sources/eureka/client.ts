// Reads a Eureka cluster's registry over its REST API: GET <service URL>apps and apps/delta as
// JSON, from one peer at a time, the next when one fails. node:http(s), not eureka-js-client: its
// fetch applies a delta without checking apps__hashcode, and with its UP-only filter on it skips a
// delta's change of an instance to DOWN (the instance stays UP in its cache); it also needs an
// instance of its own to register, and sets no limit on an answer's size. Two GETs are all this needs.
import { readFileSync } from 'node:fs';
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { createGunzip } from 'node:zlib';
import type { EurekaSourceConfig } from '../../../common/contract/index.js';

/** Where an answer came from, and what it said. */
export interface EurekaAnswer<T> {
  server: string;
  value: T;
  bytes: number;
}

/** A request that failed, with what a user needs to fix it. */
export class EurekaRequestError extends Error {
  override readonly name = 'EurekaRequestError';
  constructor(
    message: string,
    /** The server answered 404: the base path is wrong (or, on auto-detection, not this one). */
    readonly notFound = false,
  ) {
    super(message);
  }
}

/** Base paths tried, in order, for a server URL with none: Spring Cloud's, then Netflix's. */
export const DEFAULT_BASE_PATHS = ['/eureka/', '/eureka/v2/'] as const;

interface Server {
  /** The URL as configured (shown in status and logs; it holds no credentials, the contract refuses them). */
  url: string;
  /** The base URL requests go to, ending in `/`; undefined until auto-detection found it. */
  base?: string;
  /** Base URLs to try when the configured URL has no path. */
  candidates: string[];
}

export type EurekaClientOptions = Pick<EurekaSourceConfig, 'servers' | 'basicAuth' | 'tls' | 'timeoutSeconds' | 'maxResponseBytes'>;

export class EurekaClient {
  private readonly servers: Server[];
  /** The peer that answered last: asked first next time. */
  private current = 0;
  private httpAgent = new HttpAgent({ keepAlive: true, maxSockets: 1 });
  private httpsAgent?: HttpsAgent;
  private tlsMaterial = '';

  constructor(private readonly options: EurekaClientOptions) {
    this.servers = options.servers.map((url) => {
      const parsed = new URL(url);
      if (parsed.pathname === '/' || parsed.pathname === '') {
        return { url, candidates: DEFAULT_BASE_PATHS.map((path) => new URL(path, parsed).toString()) };
      }
      const base = parsed.toString().endsWith('/') ? parsed.toString() : `${parsed.toString()}/`;
      return { url, base, candidates: [base] };
    });
  }

  /** The peer asked first now. */
  get address(): string {
    return this.servers[this.current]!.url;
  }

  /**
   * GET `<base>apps` or `<base>apps/delta` from the current peer, else each next one in turn,
   * read by `parse`: a peer whose answer it throws on (garbage, truncated) fails like one that
   * does not answer. The one that answers becomes current. Throws with every peer's failure when
   * none answers.
   */
  async get<T>(path: 'apps' | 'apps/delta', parse: (body: string) => T): Promise<EurekaAnswer<T>> {
    const failures: string[] = [];
    for (let tried = 0; tried < this.servers.length; tried++) {
      const index = (this.current + tried) % this.servers.length;
      const server = this.servers[index]!;
      try {
        const body = await this.getFrom(server, path);
        const value = parse(body);
        this.current = index;
        return { server: server.url, value, bytes: Buffer.byteLength(body) };
      } catch (error) {
        failures.push(`${server.url}: ${(error as Error).message}`);
      }
    }
    throw new EurekaRequestError(failures.length === 1 ? failures[0]! : `no Eureka server answered: ${failures.join('; ')}`);
  }

  close(): void {
    this.httpAgent.destroy();
    this.httpsAgent?.destroy();
  }

  private async getFrom(server: Server, path: string): Promise<string> {
    if (server.base !== undefined) return this.request(new URL(path, server.base));
    const notFound: string[] = [];
    for (const base of server.candidates) {
      try {
        const body = await this.request(new URL(path, base));
        server.base = base;
        return body;
      } catch (error) {
        if (!(error instanceof EurekaRequestError && error.notFound)) throw error;
        notFound.push(new URL(base).pathname);
      }
    }
    throw new EurekaRequestError(`404 under every Eureka base path tried (${notFound.join(', ')}): name the base path in the server URL`, true);
  }

  private request(url: URL): Promise<string> {
    const { timeoutSeconds, maxResponseBytes } = this.options;
    const headers: Record<string, string> = { accept: 'application/json', 'accept-encoding': 'gzip' };
    if (this.options.basicAuth) {
      const { username, passwordFile } = this.options.basicAuth;
      let password: string;
      try {
        password = readFileSync(passwordFile, 'utf8').replace(/\r?\n$/, '');
      } catch (error) {
        return Promise.reject(new EurekaRequestError(`cannot read basicAuth.passwordFile ${passwordFile}: ${(error as Error).message}`));
      }
      headers.authorization = `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`;
    }
    const https = url.protocol === 'https:';
    let agent: HttpAgent | HttpsAgent;
    try {
      agent = https ? this.tlsAgent() : this.httpAgent;
    } catch (error) {
      return Promise.reject(error as Error);
    }
    return new Promise<string>((resolve, reject) => {
      const fail = (message: string, notFound = false) => {
        clearTimeout(timer);
        req.destroy();
        reject(new EurekaRequestError(message, notFound));
      };
      const req = (https ? httpsRequest : httpRequest)(url, { headers, agent }, (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          const status = res.statusCode ?? 0;
          if (status === 401 || status === 403) fail(`${url.pathname} answered ${status}: the server wants credentials (basicAuth) or refused these`);
          else fail(`${url.pathname} answered ${status}`, status === 404);
          return;
        }
        readBody(res, maxResponseBytes).then(
          (body) => {
            clearTimeout(timer);
            resolve(body);
          },
          (error: Error) => fail(`${url.pathname}: ${error.message}`),
        );
      });
      const timer = setTimeout(() => fail(`no whole answer from ${url.pathname} within ${timeoutSeconds} s`), timeoutSeconds * 1000);
      req.on('error', (error: NodeJS.ErrnoException) => fail(error.code ? `${error.code} (${error.message})` : error.message));
      req.end();
    });
  }

  /** The HTTPS agent for the TLS files as they are now: a rotated certificate is used from the next request on. */
  private tlsAgent(): HttpsAgent {
    const tls = this.options.tls ?? {};
    const read = (what: string, file: string | undefined) => {
      if (file === undefined) return undefined;
      try {
        return readFileSync(file, 'utf8');
      } catch (error) {
        throw new EurekaRequestError(`cannot read tls.${what} ${file}: ${(error as Error).message}`);
      }
    };
    const ca = read('caFile', tls.caFile);
    const cert = read('certFile', tls.certFile);
    const key = read('keyFile', tls.keyFile);
    const material = `${ca}\0${cert}\0${key}`;
    if (!this.httpsAgent || material !== this.tlsMaterial) {
      this.httpsAgent?.destroy();
      this.tlsMaterial = material;
      this.httpsAgent = new HttpsAgent({ keepAlive: true, maxSockets: 1, ...(ca ? { ca } : {}), ...(cert && key ? { cert, key } : {}) });
    }
    return this.httpsAgent;
  }
}

/** The body as text, gunzipped when it says so, refused past `limit` bytes (after decompression). */
function readBody(res: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const encoding = (res.headers['content-encoding'] ?? '').toLowerCase();
    if (encoding !== '' && encoding !== 'gzip' && encoding !== 'identity') {
      res.resume();
      reject(new Error(`the answer is encoded as ${encoding}, which was not asked for`));
      return;
    }
    const declared = Number(res.headers['content-length']);
    if (encoding !== 'gzip' && Number.isFinite(declared) && declared > limit) {
      res.resume();
      reject(new Error(`the answer is ${declared} bytes, over maxResponseBytes (${limit})`));
      return;
    }
    const stream = encoding === 'gzip' ? res.pipe(createGunzip()) : res;
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (error?: Error) => {
      if (done) return;
      done = true;
      if (error) {
        res.destroy();
        if (stream !== res) stream.destroy();
        reject(error);
      } else resolve(Buffer.concat(chunks, size).toString('utf8'));
    };
    stream.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) finish(new Error(`the answer is over maxResponseBytes (${limit} bytes)`));
      else chunks.push(chunk);
    });
    stream.on('end', () => finish());
    stream.on('error', (error: Error) => finish(new Error(`the answer broke off: ${error.message}`)));
    res.on('aborted', () => finish(new Error('the answer broke off (the connection closed before its end)')));
    res.on('error', (error: Error) => finish(new Error(`the answer broke off: ${error.message}`)));
  });
}
