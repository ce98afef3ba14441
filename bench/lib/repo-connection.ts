// One keep-alive connection to flb's repo, HTTP/1.1 by hand, for the simulated sidecars of the
// benchmarks (catalog-watchers.ts, repo-workers.ts): a thousand workers share one core here, and
// node:http's cost per answer (~70 us) would be measured instead of the repo's and the bridge's.
// The repo answers with a content-length, never chunked; one request at a time per connection.
import { connect as tcpConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';

export interface RepoAnswer {
  status: number;
  etag: string;
  type: string;
  body: string;
}

export class RepoConnection {
  private socket!: Socket;
  private buffer: Buffer = Buffer.alloc(0);
  private pending?: { head: boolean; resolve: (answer: RepoAnswer) => void; reject: (error: Error) => void };

  /** `ca`: trusted for an https:// base (the repo's certificate names localhost). */
  constructor(
    private readonly url: URL,
    private readonly ca?: string,
  ) {}

  async open(): Promise<this> {
    const port = Number(this.url.port);
    await new Promise<void>((resolve, reject) => {
      this.socket =
        this.url.protocol === 'https:'
          ? tlsConnect({ host: this.url.hostname, port, servername: 'localhost', ...(this.ca ? { ca: this.ca } : {}) }, resolve)
          : tcpConnect({ host: this.url.hostname, port }, resolve);
      this.socket.once('error', reject);
    });
    this.socket.setNoDelay(true);
    this.socket.on('data', (chunk: Buffer) => {
      this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
      this.parse();
    });
    this.socket.on('close', () => this.pending?.reject(new Error(`the repo at ${this.url.host} closed the connection`)));
    return this;
  }

  send(method: string, path: string, headers: Record<string, string> = {}): Promise<RepoAnswer> {
    return new Promise((resolve, reject) => {
      this.pending = { head: method === 'HEAD', resolve, reject };
      const extra = Object.entries(headers)
        .map(([name, value]) => `${name}: ${value}\r\n`)
        .join('');
      this.socket.write(`${method} ${path} HTTP/1.1\r\nhost: ${this.url.host}\r\n${extra}\r\n`);
    });
  }

  private parse(): void {
    const end = this.buffer.indexOf('\r\n\r\n');
    if (end < 0 || !this.pending) return;
    const lines = this.buffer.subarray(0, end).toString('latin1').split('\r\n');
    const headers = new Map(lines.slice(1).map((line) => [line.slice(0, line.indexOf(':')).toLowerCase(), line.slice(line.indexOf(':') + 1).trim()]));
    if (headers.get('transfer-encoding')) {
      this.pending.reject(new Error('a chunked answer: the simulated workers read content-length only'));
      this.pending = undefined;
      return;
    }
    const status = Number(lines[0]!.split(' ')[1]);
    const length = this.pending.head || status === 304 ? 0 : Number(headers.get('content-length') ?? 0);
    if (this.buffer.length < end + 4 + length) return;
    const body = this.buffer.subarray(end + 4, end + 4 + length).toString('utf8');
    this.buffer = this.buffer.subarray(end + 4 + length);
    const { resolve } = this.pending;
    this.pending = undefined;
    resolve({ status, etag: headers.get('etag') ?? '', type: headers.get('content-type') ?? '', body });
  }
}

/** A codebase's `_etags` listing: file path to its etag. */
export const parseEtags = (listing: string) =>
  new Map(
    listing
      .split('\n')
      .filter(Boolean)
      .map((line) => [line.slice(0, line.lastIndexOf('#')), line.slice(line.lastIndexOf('#') + 1)] as [string, string]),
  );
