/*
 * The sidecar's readiness as the kubelet and a user see it: /ready on the admin and probe ports
 * answers 503 with the reason (no configuration and why, a sidecar.json for another sidecar, ports
 * that differ from mesh.json's, draining), and a log line says when it changes. The real sidecar
 * (runSidecar) on loopback, every port chosen by the kernel unless a test needs one.
 */
import { afterEach, describe, expect, it } from '@jest/globals';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, request } from 'node:http';
import { connect, createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { API_VERSION, type SidecarPorts } from '../common/contract/index.js';
import { ActionableError } from '../common/errors.js';
import { meshDoc, sidecarDoc } from './config/testing/fixtures.js';
import { runSidecar, type RunningSidecar, type SidecarOptions } from './sidecar.js';

const ID = 'pod.shop.w';
const ANY_PORTS: SidecarPorts = { admin: 0, outbound: 0, inbound: 0, metrics: 0, dns: 0, livenessProbe: 0, readinessProbe: 0, startupProbe: 0 };

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A logger whose lines the test reads. */
function capturedLog() {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { log: pino({ level: 'info' }, stream), lines };
}

function configDir(files: { mesh?: unknown; sidecar?: unknown }): string {
  const dir = mkdtempSync(join(tmpdir(), 'flb-sidecar-ready-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, 'services'));
  if (files.mesh) writeFileSync(join(dir, 'mesh.json'), JSON.stringify(files.mesh));
  if (files.sidecar) writeFileSync(join(dir, 'sidecar.json'), JSON.stringify(files.sidecar));
  return dir;
}

async function start(overrides: Partial<SidecarOptions> & Pick<SidecarOptions, 'config'>): Promise<RunningSidecar & { lines: Record<string, unknown>[] }> {
  const { log, lines } = capturedLog();
  const running = await runSidecar({ id: ID, ports: ANY_PORTS, log, appHost: '127.0.0.1', dnsUpstreams: ['127.0.0.1:9'], drainMs: 0, ...overrides });
  cleanups.push(() => running.close());
  return Object.assign(running, { lines });
}

function get(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function until<T>(what: string, check: () => Promise<T | undefined>, ms = 5000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe('the sidecar names a listener that cannot start', () => {
  it.each([
    ['outbound', "the sidecar's outbound listener", '--outbound-port'],
    ['admin', "the sidecar's admin listener", '--admin-port'],
    ['readinessProbe', "the sidecar's readiness probe listener", '--readiness-probe-port'],
  ] as const)('a taken %s port: which listener, where, and the flag that moves it', async (name, what, flag) => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, name === 'admin' ? '127.0.0.1' : '::', resolve));
    cleanups.push(() => new Promise((resolve) => taken.close(resolve)));
    const port = (taken.address() as { port: number }).port;
    const error = await start({
      ports: { ...ANY_PORTS, [name]: port },
      config: { kind: 'local', dir: configDir({ mesh: meshDoc(), sidecar: sidecarDoc(ID) }), watch: false },
    }).catch((e: unknown) => e as ActionableError);
    expect(error).toBeInstanceOf(ActionableError);
    const host = name === 'admin' ? '127.0.0.1' : '[::]';
    expect((error as ActionableError).message).toBe(`${what} cannot listen on ${host}:${port}: another process is listening there`);
    expect((error as ActionableError).hint).toContain(`or move ${what} with ${flag} PORT`);
  });
});

describe('the sidecar asks the repo for its configuration while its listeners start', () => {
  it('a listener that cannot start stops the asking again: no worker is left polling the repo', async () => {
    const asked: string[] = [];
    const repo = createServer((req, res) => {
      asked.push(`${req.method} ${req.url}`);
      res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => repo.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise((resolve) => repo.close(resolve)));
    const state = mkdtempSync(join(tmpdir(), 'flb-sidecar-state-'));
    cleanups.push(() => rmSync(state, { recursive: true, force: true }));
    // The last listener to start, the readiness probe's, cannot.
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '::', resolve));
    cleanups.push(() => new Promise((resolve) => taken.close(resolve)));
    const url = `http://127.0.0.1:${(repo.address() as { port: number }).port}/repo/flb/sidecars/${ID}/`;
    const error = await start({
      ports: { ...ANY_PORTS, readinessProbe: (taken.address() as { port: number }).port },
      config: { kind: 'repo', url, cacheDir: join(state, 'config') },
    }).catch((e: unknown) => e as ActionableError);
    expect((error as ActionableError).message).toContain("the sidecar's readiness probe listener cannot listen");
    // What was on its way when it stopped has arrived; a worker still running would ask again within a second (not published: 0.25-0.5 s).
    await new Promise((resolve) => setTimeout(resolve, 200));
    const before = asked.length;
    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect(asked.slice(before)).toEqual([]);
  });
});

describe('the sidecar says why it is not ready', () => {
  it('refuses a sidecar.json for another sidecar in --config-dir mode, naming both ids, on /ready and the probe ports', async () => {
    const sidecar = await start({ config: { kind: 'local', dir: configDir({ mesh: meshDoc(), sidecar: sidecarDoc('pod.shop.other') }), watch: false } });
    const ready = await get(sidecar.ports.admin, '/ready');
    expect(ready.status).toBe(503);
    expect(ready.body).toBe(
      'not ready: configuration rejected: invalid sidecar.json: id: is "pod.shop.other", but this sidecar is "pod.shop.w" (its --id, FLB_SIDECAR_ID, or POD_NAMESPACE and POD_NAME)\n',
    );
    expect(await get(sidecar.ports.readinessProbe, '/ready')).toEqual(ready);
    expect(sidecar.lines.find((l) => l.msg === 'not ready')).toMatchObject({ reason: expect.stringContaining('pod.shop.other') });
  });

  it('is not ready while its ports differ from the mesh.json published, and says which; ready once they agree', async () => {
    const admin = await freePort();
    const dir = configDir({ mesh: meshDoc({ ports: { admin: admin + 1 } }), sidecar: sidecarDoc(ID) });
    const sidecar = await start({ ports: { ...ANY_PORTS, admin }, config: { kind: 'local', dir, watch: true } });
    const ready = await get(admin, '/ready');
    expect(ready.status).toBe(503);
    expect(ready.body).toContain(`not ready: ports differ from mesh.json's: admin ${admin} (--admin-port) where mesh.json says ${admin + 1}`);
    writeFileSync(join(dir, 'mesh.json'), JSON.stringify(meshDoc({ ports: { admin } })));
    await until('ready', async () => ((await get(admin, '/ready')).status === 200 ? true : undefined));
    expect((await get(admin, '/ready')).body).toBe('ready\n');
    // One line when it turned, with the reason, and one when it was ready.
    expect(sidecar.lines.filter((l) => l.msg === 'not ready' || l.msg === 'ready').map((l) => [l.msg, l.reason])).toEqual([
      ['not ready', expect.stringContaining('ports differ')],
      ['ready', undefined],
    ]);
  });

  it('says it waits for its codebase, or that the repo is unreachable, when there is no configuration yet', async () => {
    const repo = createServer((_req, res) => res.writeHead(404).end());
    await new Promise<void>((resolve) => repo.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise((resolve) => repo.close(resolve)));
    const repoPort = (repo.address() as { port: number }).port;
    const state = mkdtempSync(join(tmpdir(), 'flb-sidecar-state-'));
    cleanups.push(() => rmSync(state, { recursive: true, force: true }));
    const url = `http://127.0.0.1:${repoPort}/repo/flb/sidecars/${ID}/`;
    const waiting = await start({ config: { kind: 'repo', url, cacheDir: join(state, 'a') } });
    const notPublished = await until('the repo to be asked', async () => {
      const answer = await get(waiting.ports.admin, '/ready');
      return answer.body.includes('not published') ? answer : undefined;
    });
    expect(notPublished).toEqual({
      status: 503,
      body: `not ready: waiting for the codebase: ${url} is not published yet (the control plane creates it once it knows the pod)\n`,
    });

    const dead = await freePort();
    const deadUrl = `http://127.0.0.1:${dead}/repo/flb/sidecars/${ID}/`;
    const away = await start({ config: { kind: 'repo', url: deadUrl, cacheDir: join(state, 'b') } });
    const unreachable = await until('the repo to be tried', async () => {
      const answer = await get(away.ports.admin, '/ready');
      return answer.body.includes('unreachable') ? answer : undefined;
    });
    // (jest runs tests in a realm of their own, where Node's errors are not `instanceof Error`: they may print their class.)
    expect(unreachable.body).toMatch(new RegExp(`^not ready: repo unreachable \\(${deadUrl}\\): (Error: )?connect ECONNREFUSED 127.0.0.1:${dead}\n$`));
  });

  it('says it is draining once SIGTERM arrived', async () => {
    const sidecar = await start({ config: { kind: 'local', dir: configDir({ mesh: meshDoc(), sidecar: sidecarDoc(ID) }), watch: false } });
    expect(await get(sidecar.ports.startupProbe, '/ready')).toEqual({ status: 200, body: 'ready\n' });
    const drained = sidecar.drain();
    expect(sidecar.readiness()).toEqual({ ready: false, reason: 'draining: SIGTERM received, open connections are finishing' });
    await drained;
  });
});

describe("the sidecar's endpoint fallback follows its pod's interception mode (FLB_INTERCEPTION_MODE)", () => {
  // A Kubernetes service's pod address dialled (as a socket load balancer leaves it): with the
  // fallback on it is the service's and reaches its pod; off, it is an unknown destination, which
  // this mesh refuses.
  it.each([
    ['iptables', 'unset', 'refused'],
    ['iptables', 'ebpf', 'answered'],
    ['ebpf', 'unset', 'answered'],
    ['ebpf', 'iptables', 'refused'],
    ['ebpf', 'cni', 'refused'],
  ] as const)("a %s mesh, the pod's mode %s: %s", async (meshMode, podMode, expected) => {
    // A reset from the peer (the refused case's close) is part of the test, not a crash.
    const pod = createNetServer((socket) => socket.on('error', () => undefined).end('web'));
    await new Promise<void>((resolve) => pod.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise((resolve) => pod.close(resolve)));
    const podPort = (pod.address() as { port: number }).port;
    const dir = configDir({
      mesh: meshDoc({ interception: { mode: meshMode }, outbound: { unknownDestination: 'deny' } }),
      sidecar: sidecarDoc(ID),
    });
    writeFileSync(
      join(dir, 'services', 'web.shop.json'),
      JSON.stringify({
        apiVersion: API_VERSION,
        kind: 'Service',
        id: 'web.shop',
        name: 'web',
        namespace: 'shop',
        source: 'kubernetes',
        vips: [{ address: '10.96.0.10', allocation: 'cluster-ip' }],
        ports: [{ port: 80, protocol: 'tcp' }],
        endpoints: [{ address: '127.0.0.1', port: podPort }],
      }),
    );
    const sidecar = await start({
      config: { kind: 'local', dir, watch: false },
      outboundDestination: () => ({ address: '127.0.0.1', port: podPort, family: 4 }),
      ...(podMode === 'unset' ? {} : { interceptionMode: podMode }),
    });
    await until('the sidecar configured', async () => (sidecar.ready() ? true : undefined));
    const answer = await new Promise<string>((resolve) => {
      let body = '';
      const socket = connect({ host: '127.0.0.1', port: sidecar.ports.outbound });
      socket.on('data', (d: Buffer) => (body += d.toString()));
      socket.once('close', () => resolve(body));
      socket.on('error', () => undefined);
    });
    expect(answer === 'web' ? 'answered' : 'refused').toBe(expected);
  });
});
