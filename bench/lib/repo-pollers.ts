// 1,000 of the sidecar's own repo workers (common/repo-worker.ts, node:https keep-alive) polling with HEAD
// every 5 s, in one process, for bench/repo.ts: what the repo pays for real sidecars that poll,
// including whether their connections survive the poll interval.
import { createLogger } from '../../common/log.js';
import { RepoWorker } from '../../common/repo-worker.js';

const o = JSON.parse(process.argv[2]!) as { base: string; codebases: string[]; pollMs: number };
const log = createLogger('bench-pollers', 'error');
const workers = o.codebases.map(
  (codebase) => new RepoWorker({ url: `${o.base}/repo${codebase}/`, onUpdate: () => {}, waitSeconds: 0, pollIntervalMs: o.pollMs, log }),
);
// Started across one interval, as independent sidecars would be.
for (const worker of workers) setTimeout(() => worker.start(), Math.random() * o.pollMs);
