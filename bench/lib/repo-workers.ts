// Simulated repo workers for bench/repo.ts, in their own process: N workers, each of its own
// codebase, either long-polling (push) or HEAD-polling every few seconds (as Pipy workers do).
// Reads commands on stdin: "arm" (start waiting/polling), prints one JSON line per worker when it
// has the new files of its codebase: {worker, at} with `at` in epoch milliseconds
// (performance.timeOrigin based). Pushed workers get the changed files in the long poll's answer
// (flb's delta); polling workers do what a Pipy worker does: HEAD, then `_etags` and changed files.
import { createInterface } from 'node:readline';
import { parseEtags, RepoConnection } from './repo-connection.js';

const o = JSON.parse(process.argv[2]!) as { base: string; codebases: string[]; mode: 'push' | 'poll'; pollMs: number; ca?: string };
const now = () => performance.timeOrigin + performance.now();
const url = new URL(o.base);

const etags = new Map<number, string>();
const fileEtags = new Map<number, Map<string, string>>();

/** What a Pipy worker does on a new etag: `_etags`, then every file whose etag changed. */
async function fetchChanged(i: number, agent: RepoConnection, path: string): Promise<void> {
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
  const agent = await new RepoConnection(url, o.ca).open();
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
