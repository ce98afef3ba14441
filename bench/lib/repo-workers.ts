// Simulated repo workers for bench/repo.ts, in their own process: N workers, each of its own
// codebase, either long-polling (push) or HEAD-polling every few seconds (as Pipy workers do).
// Reads commands on stdin: "arm" (start waiting/polling), prints one JSON line per worker when it
// has the new files of its codebase: {worker, at} with `at` in epoch milliseconds
// (performance.timeOrigin based). Pushed workers get the changed files in the long poll's answer
// (flb's delta); polling workers do what a Pipy worker does: HEAD, then `_etags` and changed files.
import { connect as tcpConnect, type Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { connect as tlsConnect } from 'node:tls';

const o = JSON.parse(process.argv[2]!) as { base: string; codebases: string[]; mode: 'push' | 'poll'; pollMs: number; ca?: string };
const tls = o.base.startsWith('https:');
const now = () => performance.timeOrigin + performance.now();
const url = new URL(o.base);

interface Answer {
  status: number;
  etag: string;
  type: string;
  body: string;
}

/**
 * One keep-alive connection per worker, as each real worker has its own. Hand-written HTTP/1.1
 * over a socket instead of node:http because 1,000 simulated workers share one core here, and
 * node:http's per-response cost (~70 us) would be measured instead of the repo's.
 */
class Connection {
  private socket!: Socket;
  private buffer: Buffer = Buffer.alloc(0);
  private pending?: { head: boolean; resolve: (a: Answer) => void; reject: (e: Error) => void };

  async open(): Promise<this> {
    await new Promise<void>((resolve, reject) => {
      this.socket = tls
        ? tlsConnect({ host: url.hostname, port: Number(url.port), ...(o.ca ? { ca: o.ca } : {}), servername: 'localhost' }, resolve)
        : tcpConnect({ host: url.hostname, port: Number(url.port) }, resolve);
      this.socket.once('error', reject);
    });
    this.socket.on('data', (chunk: Buffer) => {
      this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
      this.parse();
    });
    this.socket.on('close', () => this.pending?.reject(new Error('connection closed')));
    return this;
  }

  private parse(): void {
    const end = this.buffer.indexOf('\r\n\r\n');
    if (end < 0 || !this.pending) return;
    const head = this.buffer.subarray(0, end).toString('latin1').split('\r\n');
    const headers = new Map(head.slice(1).map((line) => [line.slice(0, line.indexOf(':')).toLowerCase(), line.slice(line.indexOf(':') + 1).trim()]));
    const status = Number(head[0]!.split(' ')[1]);
    const length = this.pending.head || status === 304 ? 0 : Number(headers.get('content-length') ?? 0);
    if (this.buffer.length < end + 4 + length) return;
    const body = this.buffer.subarray(end + 4, end + 4 + length).toString();
    this.buffer = this.buffer.subarray(end + 4 + length);
    const { resolve } = this.pending;
    this.pending = undefined;
    resolve({ status, etag: headers.get('etag') ?? '', type: headers.get('content-type') ?? '', body });
  }

  send(method: string, path: string, headers: Record<string, string> = {}): Promise<Answer> {
    return new Promise((resolve, reject) => {
      this.pending = { head: method === 'HEAD', resolve, reject };
      const lines = Object.entries(headers)
        .map(([k, v]) => `${k}: ${v}\r\n`)
        .join('');
      this.socket.write(`${method} ${path} HTTP/1.1\r\nhost: ${url.host}\r\n${lines}\r\n`);
    });
  }
}

const etags = new Map<number, string>();
const fileEtags = new Map<number, Map<string, string>>();
const parseEtags = (body: string) =>
  new Map(
    body
      .split('\n')
      .filter(Boolean)
      .map((line) => [line.slice(0, line.lastIndexOf('#')), line.slice(line.lastIndexOf('#') + 1)] as [string, string]),
  );

/** What a Pipy worker does on a new etag: `_etags`, then every file whose etag changed. */
async function fetchChanged(i: number, agent: Connection, path: string): Promise<void> {
  const latest = parseEtags((await agent.send('GET', `${path}_etags`)).body);
  const known = fileEtags.get(i) ?? new Map<string, string>();
  for (const [file, tag] of latest) {
    if (known.get(file) === tag) continue;
    const got = await agent.send('GET', `${path}${file.slice(1)}`);
    if (got.status !== 200) throw new Error(`GET ${path}${file}: ${got.status}`);
  }
  fileEtags.set(i, latest);
}
async function worker(i: number): Promise<void> {
  const path = `/repo${o.codebases[i]}/`;
  const agent = await new Connection().open();
  etags.set(i, (await agent.send('HEAD', path)).etag);
  fileEtags.set(i, parseEtags((await agent.send('GET', `${path}_etags`)).body));
  if (o.mode === 'push') {
    const answer = await agent.send('GET', path, { 'if-none-match': etags.get(i)!, prefer: 'wait=50', accept: 'application/vnd.flb.repo-delta+json' });
    if (answer.status !== 200 || answer.etag === etags.get(i)) return;
    if (answer.type === 'application/vnd.flb.repo-delta+json') {
      const delta = JSON.parse(answer.body) as { files: Record<string, { content: string }> };
      if (Object.keys(delta.files).length === 0) throw new Error('a pushed delta without the changed file');
    } else await fetchChanged(i, agent, path);
    process.stdout.write(`${JSON.stringify({ worker: i, at: now() })}\n`);
    return;
  }
  // Polling: staggered across the interval, as independent workers would be.
  await new Promise((r) => setTimeout(r, Math.random() * o.pollMs));
  for (;;) {
    const head = await agent.send('HEAD', path);
    if (head.etag !== etags.get(i)) {
      await fetchChanged(i, agent, path);
      process.stdout.write(`${JSON.stringify({ worker: i, at: now() })}\n`);
      return;
    }
    await new Promise((r) => setTimeout(r, o.pollMs));
  }
}

const lines = createInterface({ input: process.stdin });
lines.on('line', (line) => {
  if (line === 'arm') {
    Promise.all(o.codebases.map((_, i) => worker(i))).then(
      () => process.exit(0),
      (error: unknown) => {
        process.stderr.write(`worker failed: ${String(error)}\n`);
        process.exit(1);
      },
    );
    // Give every worker time to be waiting before the publish.
    setTimeout(() => process.stdout.write('armed\n'), 1500);
  }
});
