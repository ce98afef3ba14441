/*
 * Reads the repo as the control plane does: over TLS with a client certificate (CN
 * flb-control-plane reads everything), a few requests at a time on kept-alive connections. Only
 * what the diagnostics need: the codebase list, a codebase's info (its instances' status reports),
 * the served etag and files of a sidecar's codebase.
 */
import { Agent as HttpAgent, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { SIDECARS_CODEBASE_PREFIX, sidecarCodebase } from '../common/contract/index.js';
import type { RepoInstance, SidecarCodebaseFacts } from './sidecars.js';

export interface RepoAccess {
  url: string;
  /** PEM texts. */
  ca?: string;
  cert?: string;
  key?: string;
  /**
   * The name the repo's certificate is checked against (and sent as SNI) when the URL's host is
   * not one it names: a pod IP, or 127.0.0.1 through `kubectl port-forward`.
   */
  serverName?: string;
  /** Where they came from, for messages ('client certificate from Secret flomesh/flb-repo-client'). */
  credentials: string;
}

export interface RepoAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** A failed exchange, with Node's error code (ECONNREFUSED, ENOTFOUND, UNABLE_TO_VERIFY_LEAF_SIGNATURE, ...). */
export class RepoUnreachable extends Error {
  override readonly name = 'RepoUnreachable';
  constructor(
    message: string,
    readonly code?: string,
  ) {
    super(message);
  }
}

/** Answers larger than this are cut off: a codebase's info or a file is a few KiB. */
const MAX_ANSWER_BYTES = 16 * 1024 * 1024;

export class RepoClient {
  private readonly agent: HttpAgent;
  private readonly https: boolean;

  constructor(
    readonly access: RepoAccess,
    private readonly timeoutMs = 5000,
  ) {
    this.https = access.url.startsWith('https:');
    this.agent = this.https
      ? new HttpsAgent({
          keepAlive: true,
          maxSockets: 8,
          ...(access.ca ? { ca: access.ca } : {}),
          ...(access.cert ? { cert: access.cert, key: access.key } : {}),
          ...(access.serverName ? { servername: access.serverName } : {}),
        })
      : new HttpAgent({ keepAlive: true, maxSockets: 8 });
  }

  request(method: 'GET' | 'HEAD', path: string): Promise<RepoAnswer> {
    const url = new URL(path, this.access.url);
    return new Promise((resolve, reject) => {
      const req = (this.https ? httpsRequest : httpRequest)(
        url,
        { method, agent: this.agent, timeout: this.timeoutMs, ...(this.access.serverName ? { servername: this.access.serverName } : {}) },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (chunk: Buffer) => {
            size += chunk.length;
            if (size > MAX_ANSWER_BYTES) req.destroy(new RepoUnreachable(`the answer to ${method} ${path} is larger than ${MAX_ANSWER_BYTES} bytes`));
            else chunks.push(chunk);
          });
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
          res.on('error', (error) => reject(unreachable(error)));
        },
      );
      req.on('timeout', () => req.destroy(Object.assign(new Error(`no answer within ${this.timeoutMs} ms`), { code: 'ETIMEDOUT' })));
      req.on('error', (error) => reject(unreachable(error)));
      req.end();
    });
  }

  /** Every codebase's name (GET /api/v1/repo). */
  async codebases(): Promise<{ status: number; codebases: string[]; server?: string }> {
    const answer = await this.request('GET', '/api/v1/repo');
    return {
      status: answer.status,
      codebases: answer.status === 200 ? answer.body.split('\n').filter(Boolean) : [],
      ...(typeof answer.headers.server === 'string' ? { server: answer.headers.server } : {}),
    };
  }

  /** What the repo knows of one sidecar: the etag its worker is served now and the instances reporting. */
  async sidecar(id: string): Promise<SidecarCodebaseFacts | undefined> {
    const codebase = sidecarCodebase(id);
    const [info, served] = await Promise.all([this.request('GET', `/api/v1/repo${codebase}`), this.request('HEAD', `/repo${codebase}/`)]);
    if (info.status === 404) return undefined;
    if (info.status !== 200) throw new RepoUnreachable(`GET /api/v1/repo${codebase}: the repo answered ${info.status}`);
    const latest = served.status === 200 && typeof served.headers.etag === 'string' ? served.headers.etag.replace(/^W\//, '').replace(/"/g, '') : undefined;
    let parsed: { instances?: Record<string, RepoInstance> };
    try {
      parsed = JSON.parse(info.body) as typeof parsed;
    } catch {
      throw new RepoUnreachable(`GET /api/v1/repo${codebase}: the answer is not JSON (is --repo-url a flb or Pipy repo?)`);
    }
    const instances = Object.values(parsed.instances ?? {}).filter(
      (i) => typeof i?.timestamp === 'number' && typeof i.status === 'object' && i.status !== null,
    );
    return { id, ...(latest !== undefined ? { latest } : {}), instances };
  }

  /** Sidecar ids of every codebase under /flb/sidecars/. */
  static sidecarIds(codebases: readonly string[]): string[] {
    return codebases.filter((c) => c.startsWith(SIDECARS_CODEBASE_PREFIX)).map((c) => c.slice(SIDECARS_CODEBASE_PREFIX.length));
  }

  /** The files of a sidecar's codebase as a worker is served them now: the manifest, then the files `wanted` keeps. */
  async servedFiles(id: string, wanted: (path: string) => boolean): Promise<{ listed: string[]; files: Record<string, string>; unreadable: string[] }> {
    const base = `/repo${sidecarCodebase(id)}/`;
    const manifest = await this.request('GET', base);
    if (manifest.status !== 200) throw new RepoUnreachable(`GET ${base}: the repo answered ${manifest.status}`);
    // flb's repo lists paths from the codebase's root (`/mesh.json`); Pipy's without the slash.
    const listed = manifest.body
      .split('\n')
      .filter(Boolean)
      .map((path) => path.replace(/^\/+/, ''));
    const files: Record<string, string> = {};
    const unreadable: string[] = [];
    await eachLimited(listed.filter(wanted), 8, async (path) => {
      const answer = await this.request('GET', `${base}${path.split('/').map(encodeURIComponent).join('/')}`);
      if (answer.status === 200) files[path] = answer.body;
      else unreadable.push(path);
    });
    return { listed, files, unreadable };
  }

  close(): void {
    this.agent.destroy();
  }
}

function unreachable(error: Error): RepoUnreachable {
  if (error instanceof RepoUnreachable) return error;
  const code = (error as NodeJS.ErrnoException).code;
  return new RepoUnreachable(error.message || code || 'connection failed', code);
}

/** Runs `work` on every item, at most `limit` at once. */
export async function eachLimited<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await work(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
