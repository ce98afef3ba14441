#!/usr/bin/env node
// The demo image's program (flomesh/flb-demo), two small apps for pods that run under the node
// simulator:
//   flb-demo echo     an HTTP server that answers with its pod's name (and drains on SIGTERM);
//                     POST /healthz/fail and /healthz/pass make its readiness fail and pass (tests)
//   flb-demo client   calls a URL in a loop and counts answers per pod and failures; GET /stats
//                     on its stats port returns the counts as JSON
// Plain node:http: these are the apps, not the mesh, and must not depend on it.
import { createServer, request, type IncomingMessage, type ServerResponse } from 'node:http';
import { hostname } from 'node:os';

const pod = process.env.POD_NAME ?? hostname();

function flag(name: string, fallback: string): string {
  const index = process.argv.indexOf(`--${name}`);
  return index >= 0 && process.argv[index + 1] ? process.argv[index + 1]! : (process.env[`DEMO_${name.toUpperCase().replace(/-/g, '_')}`] ?? fallback);
}

function echo(): void {
  const port = Number(flag('port', '8080'));
  let served = 0;
  let draining = false;
  let failing = false;
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    if (req.method === 'POST' && (req.url === '/healthz/fail' || req.url === '/healthz/pass')) {
      failing = req.url === '/healthz/fail';
      res.writeHead(200, { 'content-type': 'text/plain' }).end(failing ? 'failing\n' : 'ok\n');
      return;
    }
    if (req.url === '/healthz') {
      const answer = draining ? 'draining' : failing ? 'failing, as asked (POST /healthz/pass)' : 'ok';
      res.writeHead(answer === 'ok' ? 200 : 503, { 'content-type': 'text/plain' }).end(`${answer}\n`);
      return;
    }
    served++;
    req.resume();
    req.on('end', () => {
      const body = JSON.stringify({ pod, path: req.url, served });
      res.writeHead(200, { 'content-type': 'application/json', 'x-served-by': pod, connection: draining ? 'close' : 'keep-alive' }).end(`${body}\n`);
    });
  });
  server.listen(port, () => console.log(JSON.stringify({ msg: 'echo listening', pod, port })));
  process.on('SIGTERM', () => {
    // Keep answering what arrives while the mesh moves traffic away, then stop.
    draining = true;
    console.log(JSON.stringify({ msg: 'draining', pod, served }));
    setTimeout(() => server.close(() => process.exit(0)), Number(flag('drain-ms', '1000'))).unref();
    setTimeout(() => process.exit(0), Number(flag('drain-ms', '1000')) + 5_000).unref();
  });
}

interface Stats {
  url: string;
  sent: number;
  ok: number;
  failed: number;
  byPod: Record<string, number>;
  lastError?: string;
  since: string;
}

function client(): void {
  const url = new URL(flag('url', 'http://echo:8080/'));
  const intervalMs = Number(flag('interval-ms', '100'));
  const statsPort = Number(flag('stats-port', '8081'));
  const timeoutMs = Number(flag('timeout-ms', '2000'));
  const stats: Stats = { url: url.href, sent: 0, ok: 0, failed: 0, byPod: {}, since: new Date().toISOString() };

  const call = () =>
    new Promise<void>((resolve) => {
      stats.sent++;
      // A new connection per call, so connection-level balancing spreads calls as well.
      const req = request(url, { agent: false, timeout: timeoutMs, headers: { connection: 'close' } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const server = res.headers['x-served-by'];
          if (res.statusCode === 200 && typeof server === 'string') {
            stats.ok++;
            stats.byPod[server] = (stats.byPod[server] ?? 0) + 1;
          } else {
            stats.failed++;
            stats.lastError = `HTTP ${res.statusCode}: ${Buffer.concat(chunks).toString().slice(0, 200)}`;
          }
          resolve();
        });
        res.on('error', (error) => {
          stats.failed++;
          stats.lastError = error.message;
          resolve();
        });
      });
      req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
      req.on('error', (error) => {
        stats.failed++;
        stats.lastError = error.message;
        resolve();
      });
      req.end();
    });

  const loop = async () => {
    for (;;) {
      const started = Date.now();
      await call();
      await new Promise((r) => setTimeout(r, Math.max(0, intervalMs - (Date.now() - started))));
    }
  };
  void loop();
  createServer((req, res) => {
    if (req.url === '/healthz') {
      res.writeHead(200).end('ok\n');
      return;
    }
    if (req.url === '/reset' && req.method === 'POST') {
      Object.assign(stats, { sent: 0, ok: 0, failed: 0, byPod: {}, lastError: undefined, since: new Date().toISOString() });
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(`${JSON.stringify(stats)}\n`);
  }).listen(statsPort, () => console.log(JSON.stringify({ msg: 'client calling', pod, url: url.href, intervalMs, statsPort })));
  setInterval(() => console.log(JSON.stringify({ msg: 'calls', ...stats })), 10_000).unref();
  process.on('SIGTERM', () => process.exit(0));
}

const command = process.argv[2];
if (command === 'echo') echo();
else if (command === 'client') client();
else {
  console.error('usage: flb-demo echo [--port 8080] | flb-demo client --url URL [--interval-ms 100] [--stats-port 8081]');
  process.exit(2);
}
