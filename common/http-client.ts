/*
 * A keep-alive HTTP(S) client over node:http/node:https, for the sidecar's repo worker. Written
 * instead of calling fetch because fetch loads undici, about 10 MiB of memory in every sidecar
 * (measured: a bare Node 42 MiB, after one fetch() 52 MiB); node:http is loaded anyway, node:https
 * only for an https repo.
 *
 * Trust: what node:https trusts (NODE_EXTRA_CA_CERTS included, read once at start), unless a CA
 * file is given: then the repo's certificate must chain to that bundle alone, and the file is
 * looked at (stat) before every request, so a rotated CA is used from the next connection on,
 * without a restart. A kubelet updates a mounted ConfigMap by swapping a `..data` symlink, which
 * the stat follows. A file that becomes unreadable or holds no certificate is reported once and
 * the last good bundle is kept; with none yet, requests fail naming the file.
 */
import { X509Certificate } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
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

export interface ClientOptions {
  /** PEM bundle an https server's certificate must chain to (instead of Node's trust), re-read when it changes. */
  caFile?: string;
  /** Told once per problem with the CA file (the last good bundle is kept meanwhile). */
  onCaProblem?(message: string): void;
}

export class KeepAliveClient {
  private readonly agents = new Map<string, Agent>();
  private trusted: { version: string; pem: string } | undefined;
  private refused: { version: string; message: string } | undefined;

  constructor(private readonly options: ClientOptions = {}) {}

  async request(url: URL, init: SmallRequest): Promise<SmallResponse> {
    const https = url.protocol === 'https:';
    const http: HttpModule = https ? ((await import('node:https')) as unknown as HttpModule) : await import('node:http');
    // The agent keeps connections apart by CA: after a rotation, new ones are made under the new bundle.
    const ca = https ? await this.trust() : undefined;
    let agent = this.agents.get(url.protocol);
    if (!agent) this.agents.set(url.protocol, (agent = new http.Agent({ keepAlive: true })));
    try {
      return await exchange(http, agent, url, init, ca);
    } catch (error) {
      // A kept-alive connection the server had just closed: once more, on a new one (Node's advice).
      if ((error as { reusedSocket?: boolean }).reusedSocket && (error as NodeJS.ErrnoException).code === 'ECONNRESET')
        return exchange(http, agent, url, init, ca);
      throw error;
    }
  }

  close(): void {
    for (const agent of this.agents.values()) agent.destroy();
    this.agents.clear();
  }

  /** The CA bundle to verify with (undefined: Node's trust), read again when the file changed. */
  private async trust(): Promise<string | undefined> {
    const file = this.options.caFile;
    if (file === undefined) return undefined;
    let version: string;
    try {
      const info = await stat(file);
      version = `${info.dev}:${info.ino}:${info.size}:${info.mtimeMs}:${info.ctimeMs}`;
    } catch (error) {
      return this.keepTrusted(`cannot read the CA file ${file}: ${(error as Error).message}`, 'missing');
    }
    if (version === this.trusted?.version) {
      this.refused = undefined;
      return this.trusted.pem;
    }
    if (version === this.refused?.version) return this.keepTrusted(this.refused.message, version);
    let pem: string;
    try {
      pem = await readFile(file, 'utf8');
    } catch (error) {
      return this.keepTrusted(`cannot read the CA file ${file}: ${(error as Error).message}`, version);
    }
    const problem = certificateProblem(pem);
    if (problem) return this.keepTrusted(`the CA file ${file} ${problem}`, version);
    this.trusted = { version, pem };
    this.refused = undefined;
    return pem;
  }

  private keepTrusted(message: string, version: string): string {
    if (this.refused?.message !== message) this.options.onCaProblem?.(this.trusted ? `${message}; still trusting the CA read before` : message);
    this.refused = { version, message };
    if (this.trusted) return this.trusted.pem;
    throw new Error(`${message}: the server cannot be verified`);
  }
}

/** Why a PEM bundle is not a usable set of CA certificates, or undefined. */
function certificateProblem(pem: string): string | undefined {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) return 'holds no PEM certificate';
  for (const block of blocks) {
    try {
      new X509Certificate(block);
    } catch (error) {
      return `holds a certificate that cannot be read: ${(error as Error).message}`;
    }
  }
  return undefined;
}

function exchange(http: HttpModule, agent: Agent, url: URL, init: SmallRequest, ca: string | undefined): Promise<SmallResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      { method: init.method ?? 'GET', headers: init.headers, agent, ...(init.signal ? { signal: init.signal } : {}), ...(ca !== undefined ? { ca } : {}) },
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
