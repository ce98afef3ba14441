// Simulated sidecars for bench/bridge.ts and bench/registry.ts, in their own process: one repo worker per codebase, each
// on its own keep-alive connection, long-polling without end as the sidecar's worker does against
// flb's repo (If-None-Match, Prefer: wait, the pushed delta). Sets of codebases may live on
// different repos (the bridge's and the floor's). A benchmark change is recognised by a mark in the
// files it moves (`mark-<n>`, an endpoint's pod name, or the `mark` pattern given): for every answer that brings a higher mark
// than the worker held, one line `<set> <worker> <mark> <epoch ms>` goes to stdout. `ready` is
// printed once every worker has its codebase's current version and holds a long poll.
import { parseEtags, RepoConnection } from './repo-connection.js';

const DELTA = 'application/vnd.flb.repo-delta+json';
const options = JSON.parse(process.argv[2]!) as { sets: { base: string; codebases: string[] }[]; mark?: string };
// The pattern's first group is the mark: bench/registry.ts recognises a Consul health flip by the
// instance it turned critical (`"instance":"mark-<n>","status":"critical"`).
const MARK = new RegExp(options.mark ?? 'mark-(\\d+)', 'g');
const now = () => performance.timeOrigin + performance.now();

function highestMark(text: string): number {
  let highest = -1;
  for (const match of text.matchAll(MARK)) highest = Math.max(highest, Number(match[1]));
  return highest;
}

const total = options.sets.reduce((n, set) => n + set.codebases.length, 0);
let synced = 0;

async function worker(set: number, index: number, base: string, codebase: string): Promise<void> {
  const connection = await new RepoConnection(new URL(base)).open();
  const path = `/repo${codebase}/`;
  let head = await connection.send('HEAD', path);
  while (head.status !== 200) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    head = await connection.send('HEAD', path);
  }
  let etag = head.etag;
  let fileEtags = parseEtags((await connection.send('GET', `${path}_etags`)).body);
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
      const latest = parseEtags((await connection.send('GET', `${path}_etags`)).body);
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
