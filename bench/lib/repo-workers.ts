// Simulated repo workers for bench/repo.ts, in their own process: N workers, each of its own
// codebase, either long-polling (push) or HEAD-polling every few seconds (as Pipy workers do).
// Reads commands on stdin: "arm" (start waiting/polling), prints one JSON line per worker when its
// codebase's etag changes: {worker, at} with `at` in epoch milliseconds (performance.timeOrigin based).
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { createInterface } from 'node:readline';

const o = JSON.parse(process.argv[2]!) as { base: string; codebases: string[]; mode: 'push' | 'poll'; pollMs: number; ca?: string };
const tls = o.base.startsWith('https:');
const now = () => performance.timeOrigin + performance.now();
const url = new URL(o.base);

/** One keep-alive connection per worker, as each real worker has its own. */
const newAgent = () => (tls ? new HttpsAgent({ keepAlive: true, maxSockets: 1, ...(o.ca ? { ca: o.ca } : {}) }) : new HttpAgent({ keepAlive: true, maxSockets: 1 }));

function send(agent: HttpAgent, method: string, path: string, headers: Record<string, string> = {}): Promise<{ status: number; etag: string }> {
  return new Promise((resolve, reject) => {
    const req = (tls ? httpsRequest : httpRequest)({ host: url.hostname, port: url.port, method, path, headers, agent }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, etag: String(res.headers.etag ?? '') }));
    });
    req.on('error', reject);
    req.end();
  });
}

const etags = new Map<number, string>();
async function worker(i: number): Promise<void> {
  const path = `/repo${o.codebases[i]}/`;
  const agent = newAgent();
  etags.set(i, (await send(agent, 'HEAD', path)).etag);
  if (o.mode === 'push') {
    const answer = await send(agent, 'GET', path, { 'if-none-match': etags.get(i)!, prefer: 'wait=50' });
    if (answer.status === 200 && answer.etag !== etags.get(i)) process.stdout.write(`${JSON.stringify({ worker: i, at: now() })}\n`);
    return;
  }
  // Polling: staggered across the interval, as independent workers would be.
  await new Promise((r) => setTimeout(r, Math.random() * o.pollMs));
  for (;;) {
    const head = await send(agent, 'HEAD', path);
    if (head.etag !== etags.get(i)) {
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
