// Simulated sidecars for bench/bridge.ts, in their own process: one repo worker per codebase, each
// on its own keep-alive connection, long-polling without end as the sidecar's worker does against
// flb's repo (If-None-Match, Prefer: wait, the pushed delta). Sets of codebases may live on
// different repos (the bridge's and the floor's). A benchmark change is recognised by a mark in the
// files it moves (`mark-<n>`, an endpoint's pod name): for every answer that brings a higher mark
// than the worker held, one line `<set> <worker> <mark> <epoch ms>` goes to stdout. `ready` is
// printed once every worker has its codebase's current version and holds a long poll.
import { connect, type Socket } from 'node:net';

const DELTA = 'application/vnd.flb.repo-delta+json';
const MARK = /mark-(\d+)/g;
const options = JSON.parse(process.argv[2]!) as { sets: { base: string; codebases: string[] }[] };
const now = () => performance.timeOrigin + performance.now();

interface Answer {
  status: number;
  etag: string;
  type: string;
  body: string;
}

/**
 * HTTP/1.1 over one socket, by hand: a thousand workers share one core here, and node:http's cost
 * per answer would be measured instead of the repo's and the bridge's. The repo answers with a
 * content-length, never chunked.
 */
class Connection {
  private socket!: Socket;
  private buffer: Buffer = Buffer.alloc(0);
  private pending?: { head: boolean; resolve: (answer: Answer) => void; reject: (error: Error) => void };

  constructor(private readonly url: URL) {}

  async open(): Promise<this> {
    await new Promise<void>((resolve, reject) => {
      this.socket = connect({ host: this.url.hostname, port: Number(this.url.port) }, resolve);
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

  private parse(): void {
    const end = this.buffer.indexOf('\r\n\r\n');
    if (end < 0 || !this.pending) return;
    const lines = this.buffer.subarray(0, end).toString('latin1').split('\r\n');
    const headers = new Map(lines.slice(1).map((line) => [line.slice(0, line.indexOf(':')).toLowerCase(), line.slice(line.indexOf(':') + 1).trim()]));
    if (headers.get('transfer-encoding')) throw new Error('a chunked answer: the simulated workers read content-length only');
    const status = Number(lines[0]!.split(' ')[1]);
    const length = this.pending.head || status === 304 ? 0 : Number(headers.get('content-length') ?? 0);
    if (this.buffer.length < end + 4 + length) return;
    const body = this.buffer.subarray(end + 4, end + 4 + length).toString('utf8');
    this.buffer = this.buffer.subarray(end + 4 + length);
    const { resolve } = this.pending;
    this.pending = undefined;
    resolve({ status, etag: headers.get('etag') ?? '', type: headers.get('content-type') ?? '', body });
  }

  send(method: string, path: string, headers: Record<string, string> = {}): Promise<Answer> {
    return new Promise((resolve, reject) => {
      this.pending = { head: method === 'HEAD', resolve, reject };
      const extra = Object.entries(headers)
        .map(([name, value]) => `${name}: ${value}\r\n`)
        .join('');
      this.socket.write(`${method} ${path} HTTP/1.1\r\nhost: ${this.url.host}\r\n${extra}\r\n`);
    });
  }
}

function highestMark(text: string): number {
  let highest = -1;
  for (const match of text.matchAll(MARK)) highest = Math.max(highest, Number(match[1]));
  return highest;
}

const etagsOf = (listing: string) =>
  new Map(
    listing
      .split('\n')
      .filter(Boolean)
      .map((line) => [line.slice(0, line.lastIndexOf('#')), line.slice(line.lastIndexOf('#') + 1)] as [string, string]),
  );

const total = options.sets.reduce((n, set) => n + set.codebases.length, 0);
let synced = 0;

async function worker(set: number, index: number, base: string, codebase: string): Promise<void> {
  const connection = await new Connection(new URL(base)).open();
  const path = `/repo${codebase}/`;
  let head = await connection.send('HEAD', path);
  while (head.status !== 200) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    head = await connection.send('HEAD', path);
  }
  let etag = head.etag;
  let fileEtags = etagsOf((await connection.send('GET', `${path}_etags`)).body);
  if (++synced === total) process.stdout.write('ready\n');
  let held = -1;
  for (;;) {
    const answer = await connection.send('GET', path, { 'if-none-match': etag, prefer: 'wait=50', accept: `${DELTA}, text/plain;q=0.5` });
    if (answer.status === 304) continue;
    if (answer.status !== 200) throw new Error(`GET ${base}${path}: HTTP ${answer.status}`);
    etag = answer.etag;
    let changed = answer.body;
    if (answer.type !== DELTA) {
      // No delta for this step (the repo forgot the version we held): what a Pipy worker does.
      const latest = etagsOf((await connection.send('GET', `${path}_etags`)).body);
      changed = '';
      for (const [file, tag] of latest) if (fileEtags.get(file) !== tag) changed += (await connection.send('GET', `${path}${file.slice(1)}`)).body;
      fileEtags = latest;
    }
    const at = now();
    const mark = highestMark(changed);
    if (mark > held) {
      held = mark;
      process.stdout.write(`${set} ${index} ${mark} ${at.toFixed(3)}\n`);
    }
  }
}

const workers: Promise<void>[] = [];
options.sets.forEach((set, s) => set.codebases.forEach((codebase, i) => workers.push(worker(s, i, set.base, codebase))));
Promise.all(workers).catch((error: unknown) => {
  process.stderr.write(`catalog-watchers: ${(error as Error).message}\n`);
  process.exit(1);
});
