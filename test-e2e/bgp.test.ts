/*
 * The BGP announcer (sidecar/bgp) against real routers from Debian: BIRD 2 as an external peer
 * (AS 65000) and GoBGP as an internal one (AS 65001, the speaker's own), both in a "router" network
 * namespace joined by a veth pair to a "host" namespace where the speaker runs. What an operator
 * would check on the routers: the sessions are Established, the RIB holds the VIPs (IPv4 and IPv6,
 * with our AS path and communities), a withdrawal removes one while the session stays up (same
 * uptime), and a speaker killed with SIGKILL leaves no route behind, well before the hold time
 * (graceful restart advertised without address families: the routers keep nothing for us).
 * Then `flb bgp --config` with an app listening on a VIP on the host's loopback: the VIP is announced
 * while the app passes its TCP check (and connections from the router reach the app), withdrawn
 * within a second of the app dying (sessions kept), announced again when it is back, and on SIGTERM
 * marked GRACEFUL_SHUTDOWN, withdrawn after the drain time, the sessions closed with Cease.
 * Last, two hosts announce one VIP, each gated by its own app: BIRD merges the paths (ECMP, hashed
 * by ports) and connections reach both apps; one app dies, its path leaves and its session stays.
 * And passive peering: BIRD connects to flb bgp's listener. Then `flb sidecar` with a bgp section:
 * the same announcer in the sidecar, under proxy load, on SIGTERM, and through the app's preStop
 * hook (the one the injector writes, run as the kubelet runs it): the VIP has left BIRD when the
 * hook answers, while the app still serves, before the kubelet would send it SIGTERM.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { execa, type Options, type ResultPromise } from 'execa';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer, type ServerProcess } from '../devenv/processes.js';
import { Bird, requireRouters, type BirdNeighbor } from './harness/bird.js';
import { defaultMesh, INJECT_LABEL } from '../common/contract/index.js';
import { injectPod } from '../injector/inject.js';
import { BGP_ANNOUNCER_ANNOTATION } from '../common/contract/index.js';
import { meshDoc, sidecarDoc } from '../sidecar/config/testing/fixtures.js';
import { eventually } from './harness/eventually.js';
import { createNetns, deleteNetns, link, removeStaleNamespaces, requireRoot, type Netns } from './harness/netns.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const ROUTER = { v4: '10.219.0.1', v6: 'fd00:219::1' };
const HOST = { v4: '10.219.0.2', v6: 'fd00:219::2' };
const ROUTER2 = { v4: '10.219.1.1' };
const HOST2 = { v4: '10.219.1.2', passive: '10.219.1.3' };
const VIP4 = '198.51.100.10/32';
const VIP6 = '2001:db8:100::10/128';
const HOLD_SECONDS = 9;
/** The host's second address, the sidecar's BGP source. */
const SIDECAR_HOST = '10.219.0.3';
/** Its third, the source of the sidecar's session to a second router (BIRD's `sidecar2`). */
const SIDECAR_HOST2 = '10.219.0.4';
const GOBGP_PORT = 1790;
const GOBGP_API = 50061;

/** BIRD's sessions: one per announcer the tests run, with the test timers (hold 9 s unless said). */
const birdNeighbors = (): BirdNeighbor[] => {
  const ebgp = { localAs: 65000, remoteAs: 65001, holdSeconds: HOLD_SECONDS };
  return [
    { name: 'host', local: ROUTER.v4, neighbor: HOST.v4, ...ebgp, families: ['ipv4', 'ipv6'] },
    { name: 'host2', local: ROUTER2.v4, neighbor: HOST2.v4, ...ebgp, families: ['ipv4'], comment: 'a second host, for ECMP' },
    {
      name: 'hostp',
      local: ROUTER2.v4,
      neighbor: HOST2.passive,
      ...ebgp,
      passive: false,
      families: ['ipv4'],
      comment: 'the announcer is passive toward this one: BIRD connects',
    },
    {
      name: 'sidecar',
      local: ROUTER.v4,
      neighbor: SIDECAR_HOST,
      ...ebgp,
      holdSeconds: 3,
      families: ['ipv4'],
      comment: "flb sidecar's announcer, from a second address of the host: a 3 s hold time (keepalives every second) for the test under proxy load",
    },
    { name: 'sidecar2', local: ROUTER.v4, neighbor: SIDECAR_HOST2, ...ebgp, families: ['ipv4'], comment: "a second router for flb sidecar's announcer" },
    {
      name: 'host6',
      local: ROUTER.v6,
      neighbor: HOST.v6,
      ...ebgp,
      families: ['ipv4', 'ipv6'],
      comment: 'the same host over an IPv6 session: IPv4 routes then carry the configured IPv4 next hop',
    },
  ];
};

const gobgpConf = `
[global.config]
  as = 65001
  router-id = "${ROUTER.v4}"
  port = ${GOBGP_PORT}
  local-address-list = ["${ROUTER.v4}"]
[[neighbors]]
  [neighbors.config]
    neighbor-address = "${HOST.v4}"
    peer-as = 65001
  [neighbors.timers.config]
    connect-retry = 1
    hold-time = ${HOLD_SECONDS}
    keepalive-interval = 3
    idle-hold-time-after-reset = 1
  [neighbors.transport.config]
    passive-mode = true
  # a graceful-restart helper: it would keep a restarting peer's routes, if the peer asked
  [neighbors.graceful-restart.config]
    enabled = true
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
    [neighbors.afi-safis.mp-graceful-restart.config]
      enabled = true
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
    [neighbors.afi-safis.mp-graceful-restart.config]
      enabled = true
`;

/** `node ARGS` in `ns`, killed if this test process dies (a non-zero exit is the test's to judge). */
const nodeIn = (ns: Netns, args: string[], options: Options = {}) =>
  execa('setpriv', ['--pdeathsig', 'KILL', '--', 'ip', 'netns', 'exec', ns.name, process.execPath, ...args], { reject: false, ...options });

describe('the BGP announcer against BIRD and GoBGP', () => {
  let router: Netns;
  let host: Netns;
  let host2: Netns;
  const ecmp: ResultPromise[] = [];
  let work: string;
  let bird: Bird | undefined;
  let gobgpd: ServerProcess | undefined;
  let speaker: ResultPromise | undefined;
  let speakerBundle: string;
  let flbBundle: string;
  let app: ResultPromise | undefined;
  let flbBgp: ResultPromise | undefined;
  let sidecar: ResultPromise | undefined;
  let sink: ResultPromise | undefined;

  const gobgp = async (...args: string[]) => (await router.exec('gobgp', ['-p', String(GOBGP_API), ...args])).stdout;
  /** The prefixes BIRD learned from the speaker (over its IPv4 session, or `host6`). */
  const birdRoutes = (protocol = 'host') => bird!.routes(protocol);
  const gobgpRoutes = async () => {
    const prefixes: string[] = [];
    for (const family of ['ipv4', 'ipv6']) {
      const rib = JSON.parse((await gobgp('global', 'rib', '-a', family, '-j')) || '{}') as Record<string, unknown>;
      prefixes.push(...Object.keys(rib));
    }
    return prefixes.sort();
  };
  /** "Established" with its since-time (BIRD prints the time the state began). */
  const birdSession = () => bird!.establishedSince('host');
  const gobgpSession = async () => {
    const [neighbor] = JSON.parse(await gobgp('neighbor', '-j')) as { state: { session_state: number }; timers: { state: { uptime: { seconds: number } } } }[];
    // session_state 6: ESTABLISHED in GoBGP's API
    return neighbor?.state.session_state === 6 ? neighbor.timers.state.uptime.seconds : undefined;
  };
  const command = (line: string) => speaker!.stdin!.write(`${line}\n`);

  function startSpeaker(): ResultPromise {
    const options = {
      localAs: 65001,
      routerId: HOST.v4,
      holdTimeSeconds: HOLD_SECONDS,
      connectRetryMs: 500,
      peers: [
        { address: ROUTER.v4, remoteAs: 65000, nextHop: { ipv6: HOST.v6 } },
        { address: ROUTER.v4, port: GOBGP_PORT, remoteAs: 65001, nextHop: { ipv6: HOST.v6 } },
        { address: ROUTER.v6, remoteAs: 65000, nextHop: { ipv4: HOST.v4 } },
      ],
    };
    const child = nodeIn(host, [speakerBundle, JSON.stringify(options)], {
      stdin: 'pipe',
      stdout: 'pipe',
      stderr: ['pipe', 'inherit'].includes(process.env.FLB_E2E_SPEAKER_LOG ?? '') ? 'inherit' : 'ignore',
    });
    return child;
  }

  beforeAll(async () => {
    requireRoot('the BGP end-to-end test');
    await requireRouters(['bird', 'birdc', 'gobgpd', 'gobgp']);
    await removeStaleNamespaces();
    work = mkdtempSync(join(tmpdir(), 'flb-bgp-e2e-'));
    const { build } = await import('esbuild');
    speakerBundle = join(ROOT, 'node_modules/.cache/flb-bgp-e2e/speaker-process.mjs');
    flbBundle = join(ROOT, 'node_modules/.cache/flb-bgp-e2e/flb-bgp.mjs');
    for (const [entry, outfile] of [
      ['sidecar/bgp/testing/speaker-process.ts', speakerBundle],
      ['sidecar/bgp/testing/flb-bgp-process.ts', flbBundle],
    ] as const) {
      await build({
        entryPoints: [join(ROOT, entry)],
        outfile,
        bundle: true,
        platform: 'node',
        format: 'esm',
        target: 'node20',
        packages: 'external',
        logLevel: 'error',
      });
    }
    router = await createNetns('bgp-router');
    host = await createNetns('bgp-host');
    await link(router, [`${ROUTER.v4}/24`, `${ROUTER.v6}/64`], host, [`${HOST.v4}/24`, `${HOST.v6}/64`]);
    host2 = await createNetns('bgp-host2');
    await link(router, [`${ROUTER2.v4}/24`], host2, [`${HOST2.v4}/24`, `${HOST2.passive}/24`]);
    // Spread connections over equal-cost paths by ports too, not by addresses alone (one client address here).
    await router.exec('sysctl', ['-qw', 'net.ipv4.fib_multipath_hash_policy=1']);
    writeFileSync(join(work, 'gobgpd.toml'), gobgpConf);
    bird = await Bird.start(work, { routerId: ROUTER.v4, kernel: true, neighbors: birdNeighbors() }, router);
    gobgpd = startServer(
      'gobgpd',
      'ip',
      ['netns', 'exec', router.name, 'gobgpd', '-f', join(work, 'gobgpd.toml'), '--api-hosts', `127.0.0.1:${GOBGP_API}`, '-l', 'info'],
      join(work, 'gobgpd.log'),
    );
    await eventually('GoBGP to answer', async () => ((await gobgp('global')) ? true : undefined), 20_000);
  });

  afterAll(async () => {
    speaker?.kill('SIGKILL');
    flbBgp?.kill('SIGKILL');
    sidecar?.kill('SIGKILL');
    sink?.kill('SIGKILL');
    app?.kill('SIGKILL');
    for (const child of ecmp) child.kill('SIGKILL');
    await gobgpd?.stop();
    await bird?.stop();
    await deleteNetns(router);
    await deleteNetns(host);
    await deleteNetns(host2);
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('comes up with both routers and puts the VIPs in their RIBs', async () => {
    speaker = startSpeaker();
    command(`announce ${VIP4} 65001:100`);
    command(`announce ${VIP6}`);
    await eventually('BIRD to hold both VIPs', async () => ((await birdRoutes()).join() === [VIP4, VIP6].sort().join() ? true : undefined), 30_000);
    await eventually('GoBGP to hold both VIPs', async () => ((await gobgpRoutes()).join() === [VIP4, VIP6].sort().join() ? true : undefined), 30_000);
    await eventually(
      'BIRD to hold both VIPs over the IPv6 session',
      async () => ((await birdRoutes('host6')).join() === [VIP4, VIP6].sort().join() ? true : undefined),
      30_000,
    );
    // eBGP to BIRD: our AS in the path, the connection's address as next hop, the community.
    const detail = await bird!.show('route', VIP4, 'all');
    expect(detail).toContain(`via ${HOST.v4}`);
    expect(detail).toMatch(/BGP\.as_path: 65001\s*$/m);
    expect(detail).toMatch(/BGP\.community: \(65001,100\)/);
    expect(await bird!.show('route', VIP6, 'all')).toContain(`via ${HOST.v6}`);
    // over the IPv6 session, the IPv4 VIP carries the configured IPv4 next hop
    expect(await bird!.show('route', 'protocol', 'host6', VIP4, 'all')).toContain(`via ${HOST.v4}`);
    expect(await bird!.show('protocols', 'all', 'host6')).toMatch(new RegExp(`Neighbor address:\\s+${HOST.v6}`));
    // iBGP to GoBGP: LOCAL_PREF 100, an empty AS path.
    const [path] = (
      JSON.parse(await gobgp('global', 'rib', '-a', 'ipv4', '-j')) as Record<string, { attrs: { type: number; value?: unknown; as_paths?: unknown[] }[] }[]>
    )[VIP4]!;
    expect(path!.attrs).toEqual(expect.arrayContaining([expect.objectContaining({ type: 5, value: 100 })]));
  });

  it('withdraws a VIP with an UPDATE: it leaves both RIBs and the sessions stay up', async () => {
    const birdSince = await birdSession();
    const gobgpUp = await gobgpSession();
    expect(birdSince).toBeDefined();
    expect(gobgpUp).toBeDefined();
    command(`withdraw ${VIP4}`);
    await eventually('BIRD to drop the IPv4 VIP', async () => ((await birdRoutes()).join() === VIP6 ? true : undefined), 10_000);
    await eventually('GoBGP to drop the IPv4 VIP', async () => ((await gobgpRoutes()).join() === VIP6 ? true : undefined), 10_000);
    await eventually('BIRD to drop it from the IPv6 session', async () => ((await birdRoutes('host6')).join() === VIP6 ? true : undefined), 10_000);
    // Long enough for a session reset to show in the routers' since-times (GoBGP's are in seconds).
    await new Promise((r) => setTimeout(r, 2000));
    command(`announce ${VIP4}`);
    await eventually('BIRD to hold it again', async () => ((await birdRoutes()).includes(VIP4) ? true : undefined), 10_000);
    await eventually('GoBGP to hold it again', async () => ((await gobgpRoutes()).includes(VIP4) ? true : undefined), 10_000);
    expect(await birdSession()).toBeCloseTo(birdSince!, -2);
    expect(await gobgpSession()).toEqual(gobgpUp);
  });

  it('killed with SIGKILL, leaves no route in either router, well before the hold time', async () => {
    speaker!.kill('SIGKILL');
    const killed = Date.now();
    await eventually('BIRD to drop every VIP', async () => ((await birdRoutes()).length === 0 ? true : undefined), 30_000, 100);
    await eventually('GoBGP to drop every VIP', async () => ((await gobgpRoutes()).length === 0 ? true : undefined), 30_000, 100);
    await eventually('BIRD to drop every VIP of the IPv6 session', async () => ((await birdRoutes('host6')).length === 0 ? true : undefined), 30_000, 100);
    const elapsed = Date.now() - killed;
    console.log(`routes gone from both routers ${elapsed} ms after SIGKILL (hold time ${HOLD_SECONDS} s)`);
    expect(elapsed).toBeLessThan((HOLD_SECONDS * 1000) / 2);
  });

  // flb bgp --config: the VIP on the host's loopback, an app listening on it, a TCP check gating it.
  const APP_VIP = '198.51.100.20';
  const startApp = () =>
    nodeIn(host, ['-e', `require('net').createServer((s) => s.on('error', () => {}).end('hello from the app\\n')).listen(8080, '${APP_VIP}')`]);
  /** A connection from the router to the VIP, through the route BIRD learned and put in its kernel table. */
  const viaRouter = async () =>
    (
      await router.exec(
        process.execPath,
        [
          '-e',
          `const s = require('net').connect(8080, '${APP_VIP}', () => undefined); s.setTimeout(2000, () => process.exit(1)); s.on('data', (d) => process.stdout.write(d)); s.on('error', () => process.exit(1));`,
        ],
        {
          reject: false,
        },
      )
    ).stdout;
  const flbStatus = async () => (await host.exec(process.execPath, [flbBundle, 'bgp', 'status', '--url', 'http://127.0.0.1:15179'], { reject: false })).stdout;

  it('flb bgp --config announces the VIP while the app passes its check, and connections reach the app', async () => {
    await host.exec('ip', ['addr', 'add', `${APP_VIP}/32`, 'dev', 'lo']);
    app = startApp();
    const config = {
      localAs: 65001,
      routerId: HOST.v4,
      holdTimeSeconds: HOLD_SECONDS,
      connectRetrySeconds: 1,
      drainSeconds: 2,
      peers: [
        { address: ROUTER.v4, remoteAs: 65000 },
        { address: ROUTER.v4, port: GOBGP_PORT, remoteAs: 65001 },
      ],
      vips: [
        {
          prefix: `${APP_VIP}/32`,
          communities: ['65001:20'],
          healthCheck: { protocol: 'tcp', address: APP_VIP, port: 8080, intervalMs: 200, timeoutMs: 150, healthyThreshold: 2, unhealthyThreshold: 3 },
        },
      ],
    };
    writeFileSync(join(work, 'bgp.yaml'), JSON.stringify(config));
    flbBgp = nodeIn(host, [flbBundle, 'bgp', '--config', join(work, 'bgp.yaml')], {
      env: { FLB_LOG_FORMAT: 'json' },
      stdout: 'ignore',
      stderr: process.env.FLB_E2E_SPEAKER_LOG === 'inherit' ? 'inherit' : 'ignore',
    });
    await eventually('BIRD to hold the app VIP', async () => ((await birdRoutes()).join() === `${APP_VIP}/32` ? true : undefined), 30_000);
    await eventually('GoBGP to hold the app VIP', async () => ((await gobgpRoutes()).join() === `${APP_VIP}/32` ? true : undefined), 30_000);
    expect(await viaRouter()).toBe('hello from the app'); // execa drops the final newline
    const status = await flbStatus();
    expect(status).toMatch(new RegExp(`^${ROUTER.v4}:179\\s+65000\\s+Established`, 'm'));
    expect(status).toMatch(new RegExp(`^${ROUTER.v4}:${GOBGP_PORT}\\s+65001\\s+Established`, 'm'));
    expect(status).toMatch(/^198\.51\.100\.20\/32\s+healthy \(\d+ in a row\)\s+yes\s+connected/m);
  });

  it('withdraws the VIP within a second of the app dying, keeps the sessions, and announces it again when the app is back', async () => {
    const birdSince = await birdSession();
    expect(birdSince).toBeDefined();
    app!.kill('SIGKILL');
    const died = Date.now();
    await eventually('BIRD to drop the app VIP', async () => ((await birdRoutes()).length === 0 ? true : undefined), 10_000, 20);
    const withdrawMs = Date.now() - died;
    console.log(`app VIP left BIRD's RIB ${withdrawMs} ms after the app died (checks every 200 ms, fall after 3)`);
    expect(withdrawMs).toBeLessThan(1000);
    expect(await flbStatus()).toMatch(/^198\.51\.100\.20\/32\s+unhealthy \(\d+ in a row\)\s+no\s+ECONNREFUSED/m);
    app = startApp();
    await eventually('BIRD to hold the app VIP again', async () => ((await birdRoutes()).length === 1 ? true : undefined), 10_000);
    expect(await viaRouter()).toBe('hello from the app'); // execa drops the final newline
    expect(await birdSession()).toBeCloseTo(birdSince!, -2);
  });

  it('after BIRD restarts, the session and the VIP come back', async () => {
    await bird!.stop();
    await eventually(
      'the announcer to see BIRD gone',
      async () => (/^10\.219\.0\.1:179\s+65000\s+(Active|Connect)/m.test(await flbStatus()) ? true : undefined),
      15_000,
    );
    await bird!.startAgain();
    await eventually('BIRD to hold the app VIP again', async () => ((await birdRoutes()).join() === `${APP_VIP}/32` ? true : undefined), 20_000);
    expect(await flbStatus()).toMatch(/^10\.219\.0\.1:179\s+65000\s+Established/m);
  });

  it('on SIGTERM, marks the VIP GRACEFUL_SHUTDOWN, withdraws it after the drain time and closes the sessions', async () => {
    flbBgp!.kill('SIGTERM');
    const stopped = Date.now();
    await eventually(
      'BIRD to see GRACEFUL_SHUTDOWN',
      async () => ((await bird!.show('route', `${APP_VIP}/32`, 'all')).includes('(65535,0)') ? true : undefined),
      5_000,
      50,
    );
    await eventually('BIRD to drop the app VIP', async () => ((await birdRoutes()).length === 0 ? true : undefined), 10_000, 50);
    const drainedMs = Date.now() - stopped;
    expect(drainedMs).toBeGreaterThanOrEqual(2000);
    expect(drainedMs).toBeLessThan(4000);
    await eventually(
      'BIRD to see the session closed',
      async () => (/Received: Administrative shutdown/.test(await bird!.show('protocols', 'all', 'host')) ? true : undefined),
      5_000,
    );
    expect((await flbBgp!).exitCode).toBe(0);
    // the VIP this test put on lo is not flb bgp's to take away
    expect((await host.exec('ip', ['addr', 'show', 'dev', 'lo'])).stdout).toContain(`${APP_VIP}/32`);
  });

  // Two hosts announce one VIP, each gated by its own app: the router balances over both (ECMP).
  const ECMP_VIP = '198.51.100.30';
  // not 8080: the app of the tests above still listens there on its own VIP
  const ECMP_PORT = 8081;
  const ecmpApp = (ns: Netns, greeting: string) => {
    const child = nodeIn(ns, [
      '-e',
      // on every address: the check (to the VIP) passes only once flb bgp has put the VIP on lo
      `require('net').createServer((s) => s.on('error', () => {}).end('${greeting}')).listen(${ECMP_PORT})`,
    ]);
    ecmp.push(child);
    return child;
  };
  const ecmpAnnouncer = (ns: Netns, routerId: string, peer: string) => {
    const file = join(work, `ecmp-${ns.name}.json`);
    writeFileSync(
      file,
      JSON.stringify({
        localAs: 65001,
        routerId,
        holdTimeSeconds: HOLD_SECONDS,
        connectRetrySeconds: 1,
        drainSeconds: 0,
        peers: [{ address: peer, remoteAs: 65000 }],
        vips: [
          {
            prefix: `${ECMP_VIP}/32`,
            healthCheck: { protocol: 'tcp', address: ECMP_VIP, port: ECMP_PORT, intervalMs: 200, timeoutMs: 150, healthyThreshold: 2, unhealthyThreshold: 3 },
          },
        ],
      }),
    );
    const child = nodeIn(ns, [flbBundle, 'bgp', '--config', file], { stdout: 'ignore', stderr: 'ignore' });
    ecmp.push(child);
    return child;
  };
  /** The protocols BIRD has a path to the ECMP VIP from, and the next hops in the router's kernel route. */
  const ecmpPaths = async () => ({
    bird: [...(await bird!.show('route', `${ECMP_VIP}/32`)).matchAll(/unicast \[(host2?) /g)].map((m) => m[1]!).sort(),
    kernel: [...(await router.exec('ip', ['route', 'show', ECMP_VIP])).stdout.matchAll(/via (\S+)/g)].map((m) => m[1]!).sort(),
  });
  /** Which app answers each of `n` connections from the router. */
  const answers = async (n: number) => {
    const script = `const net = require('net'); const seen = {}; let left = ${n};
      const one = () => { const s = net.connect(${ECMP_PORT}, '${ECMP_VIP}'); let got = ''; s.setTimeout(2000, () => s.destroy());
        s.on('data', (d) => (got += d)); s.on('close', () => { seen[got || 'none'] = (seen[got || 'none'] || 0) + 1; if (--left) one(); else console.log(JSON.stringify(seen)); }); s.on('error', () => undefined); };
      one();`;
    return JSON.parse((await router.exec(process.execPath, ['-e', script])).stdout) as Record<string, number>;
  };

  it('two hosts announce one VIP: the router holds a path through each and connections reach both apps', async () => {
    ecmpApp(host, 'host1');
    ecmpApp(host2, 'host2');
    ecmpAnnouncer(host, HOST.v4, ROUTER.v4);
    ecmpAnnouncer(host2, HOST2.v4, ROUTER2.v4);
    const both = { bird: ['host', 'host2'], kernel: [HOST.v4, HOST2.v4] };
    await eventually('an ECMP route over both hosts', async () => (JSON.stringify(await ecmpPaths()) === JSON.stringify(both) ? true : undefined), 30_000);
    for (const ns of [host, host2]) expect((await ns.exec('ip', ['addr', 'show', 'dev', 'lo'])).stdout).toContain(`${ECMP_VIP}/32`);
    const seen = await answers(40);
    console.log(`40 connections to the ECMP VIP: ${JSON.stringify(seen)}`);
    expect(Object.keys(seen).sort()).toEqual(['host1', 'host2']);
  });

  it("one host's app dies: its path leaves the router, every connection goes to the other, the sessions stay; it comes back with the app", async () => {
    const since = await bird!.establishedSince('host2');
    expect(since).toBeDefined();
    ecmp[1]!.kill('SIGKILL'); // host2's app
    await eventually('the path through host2 to leave', async () => ((await ecmpPaths()).kernel.join() === HOST.v4 ? true : undefined), 10_000, 50);
    expect((await ecmpPaths()).bird).toEqual(['host']);
    expect(await answers(20)).toEqual({ host1: 20 });
    ecmpApp(host2, 'host2');
    await eventually('the path through host2 to return', async () => ((await ecmpPaths()).kernel.length === 2 ? true : undefined), 10_000);
    expect(Object.keys(await answers(40)).sort()).toEqual(['host1', 'host2']);
    expect(await bird!.establishedSince('host2')).toBeCloseTo(since!, -2);
  });

  it('flb bgp stopped on one host: its path leaves and the VIP it put on lo is gone', async () => {
    const announcer = ecmp[2]!; // host1's
    announcer.kill('SIGTERM');
    expect((await announcer).exitCode).toBe(0);
    expect((await host.exec('ip', ['addr', 'show', 'dev', 'lo'])).stdout).not.toContain(ECMP_VIP);
    await eventually('the path through host1 to leave', async () => ((await ecmpPaths()).kernel.join() === HOST2.v4 ? true : undefined), 10_000);
    expect(await answers(10)).toEqual({ host2: 10 });
  });

  it('passive peering: BIRD connects to flb bgp, which announces the VIP on that session', async () => {
    const file = join(work, 'passive.json');
    writeFileSync(
      file,
      JSON.stringify({
        localAs: 65001,
        routerId: HOST2.passive,
        holdTimeSeconds: HOLD_SECONDS,
        listenAddress: HOST2.passive,
        peers: [{ address: ROUTER2.v4, remoteAs: 65000, passive: true }],
        // host2's ECMP app listens on every address
        vips: [{ prefix: '198.51.100.40/32', healthCheck: { protocol: 'tcp', address: HOST2.passive, port: ECMP_PORT, intervalMs: 200, healthyThreshold: 1 } }],
      }),
    );
    ecmp.push(nodeIn(host2, [flbBundle, 'bgp', '--config', file, '--admin', '127.0.0.1:15180'], { stdout: 'ignore', stderr: 'ignore' }));
    await eventually(
      'BIRD to hold the VIP from its own connection',
      async () => ((await birdRoutes('hostp')).join() === '198.51.100.40/32' ? true : undefined),
      30_000,
    );
    // BIRD opened the connection: its local port is 179's peer, ours is 179
    expect((await host2.exec('ss', ['-tn', 'state', 'established', `( sport = :179 )`])).stdout).toContain(`${HOST2.passive}:179`);
  });

  // flb sidecar with a bgp section in its sidecar.json (a local config dir): the same announcer,
  // loaded by the sidecar, gating the app's VIP on the app's port, sharing the loop with the proxies.
  const SIDECAR_VIP = '198.51.100.50';
  const SIDECAR_APP_PORT = 8090;
  const LOAD_PORT = 9000;
  const LOAD_UID = 1777;
  const sidecarApp = () =>
    nodeIn(host, ['-e', `require('net').createServer((s) => s.on('error', () => {}).end('sidecar app\\n')).listen(${SIDECAR_APP_PORT}, '127.0.0.1')`]);
  let sidecarAppProcess: ResultPromise | undefined;
  const startSidecar = (configDir: string) =>
    nodeIn(host, [join(ROOT, 'bin', 'flb.js'), 'sidecar', '--id', 'pod.shop.w', '--config-dir', configDir, '--watch'], {
      env: { FLB_LOG_FORMAT: 'json' },
      stdout: 'ignore',
      stderr: process.env.FLB_E2E_SPEAKER_LOG === 'inherit' ? 'inherit' : 'ignore',
    });
  const sidecarSince = () => bird!.establishedSince('sidecar');
  const sidecarStatus = async () => {
    const result = await host.exec(process.execPath, [flbBundle, 'bgp', 'status', '--admin', 'http://127.0.0.1:15000'], { reject: false });
    return result.stdout || result.stderr;
  };

  type SidecarPeer = Record<string, unknown>;
  const sidecarPeer: SidecarPeer = { address: ROUTER.v4, remoteAs: 65000, localAddress: SIDECAR_HOST, addressFamilies: ['ipv4-unicast'] };
  const sidecarPeer2: SidecarPeer = { address: ROUTER.v4, remoteAs: 65000, localAddress: SIDECAR_HOST2, addressFamilies: ['ipv4-unicast'] };
  /** sidecar.json with a bgp section toward `peers`, gating the VIP on the app's port (the sidecar watches the file). */
  const writeSidecarBgp = (dir: string, peers: SidecarPeer[]) =>
    writeFileSync(
      join(dir, 'sidecar.json'),
      JSON.stringify(
        sidecarDoc('pod.shop.w', {
          bgp: {
            localAs: 65001,
            routerId: SIDECAR_HOST,
            holdTimeSeconds: 3,
            connectRetrySeconds: 1,
            drainSeconds: 2,
            peers,
            vips: [
              {
                prefix: `${SIDECAR_VIP}/32`,
                healthCheck: { protocol: 'tcp', port: SIDECAR_APP_PORT, intervalMs: 200, timeoutMs: 150, healthyThreshold: 2, unhealthyThreshold: 3 },
              },
            ],
          },
        }),
      ),
    );
  /** When BIRD learned its route to the VIP over the first session (its age). */
  const sidecarRoute = () => bird!.learnedAt('sidecar', `${SIDECAR_VIP}/32`);

  it('flb sidecar with a bgp section announces the VIP while the app passes, withdraws it when the app fails (session kept), and again on recovery', async () => {
    const device = /^\d+:\s+(\S+)\s+inet /m.exec((await host.exec('ip', ['-o', 'addr', 'show', 'to', `${HOST.v4}/32`])).stdout)?.[1];
    await host.exec('ip', ['addr', 'add', `${SIDECAR_HOST}/24`, 'dev', device!]);
    await host.exec('ip', ['addr', 'add', `${SIDECAR_HOST2}/24`, 'dev', device!]);
    const dir = join(work, 'sidecar-config');
    mkdirSync(join(dir, 'services'), { recursive: true });
    writeFileSync(join(dir, 'mesh.json'), JSON.stringify(meshDoc()));
    writeSidecarBgp(dir, [sidecarPeer]);
    sidecarAppProcess = sidecarApp();
    sidecar = startSidecar(dir);
    await eventually(
      'BIRD to hold the VIP from the sidecar',
      async () => ((await birdRoutes('sidecar')).join() === `${SIDECAR_VIP}/32` ? true : undefined),
      30_000,
    );
    const status = await sidecarStatus();
    expect(status).toMatch(new RegExp(`^${ROUTER.v4}:179\\s+65000\\s+Established`, 'm'));
    expect(status).toMatch(/^198\.51\.100\.50\/32\s+healthy \(\d+ in a row\)\s+yes\s+connected/m);
    const since = await sidecarSince();
    sidecarAppProcess.kill('SIGKILL');
    await eventually('BIRD to drop the VIP', async () => ((await birdRoutes('sidecar')).length === 0 ? true : undefined), 10_000, 50);
    expect(await sidecarStatus()).toMatch(/^198\.51\.100\.50\/32\s+unhealthy \(\d+ in a row\)\s+no\s+ECONNREFUSED/m);
    sidecarAppProcess = sidecarApp();
    await eventually('BIRD to hold the VIP again', async () => ((await birdRoutes('sidecar')).length === 1 ? true : undefined), 10_000);
    expect(await sidecarSince()).toBeCloseTo(since!, -2);
  });

  it("flb sidecar follows its bgp section peer by peer: a second router added, edited, reset by the router and removed while the first router's session and route keep their age", async () => {
    const dir = join(work, 'sidecar-config');
    const since = await sidecarSince();
    const route = await sidecarRoute();
    expect(since).toBeDefined();
    expect(route).toBeDefined();
    writeSidecarBgp(dir, [sidecarPeer, sidecarPeer2]);
    await eventually(
      'the second router to hold the VIP',
      async () => ((await birdRoutes('sidecar2')).join() === `${SIDECAR_VIP}/32` ? true : undefined),
      20_000,
    );
    /** Waits for the second router's session to be Established again, since later than before, with the VIP. */
    const secondSessionRenewed = async (what: string, change: () => Promise<void> | void) => {
      const before = await bird!.establishedSince('sidecar2');
      await change();
      await eventually(
        what,
        async () => {
          const now = await bird!.establishedSince('sidecar2');
          // 50 ms: beyond BIRD's printing jitter (harness/bird.ts)
          return now && now - before! > 50 && (await birdRoutes('sidecar2')).length === 1 ? true : undefined;
        },
        20_000,
      );
    };
    await secondSessionRenewed("the second router's session restarted with the edit", () =>
      writeSidecarBgp(dir, [sidecarPeer, { ...sidecarPeer2, addressFamilies: ['ipv4-unicast', 'ipv6-unicast'] }]),
    );
    // The second router resets its session: only that one comes back and is sent the VIP again.
    await secondSessionRenewed('the second session back with the VIP after its reset', () => bird!.restartProtocol('sidecar2'));
    writeSidecarBgp(dir, [sidecarPeer]);
    await eventually(
      'the second router to see its session closed',
      async () => (/Received: Administrative shutdown/.test(await bird!.show('protocols', 'all', 'sidecar2')) ? true : undefined),
      10_000,
    );
    expect(await birdRoutes('sidecar2')).toEqual([]);
    // The first router saw none of it.
    expect(await sidecarSince()).toBeCloseTo(since!, -2);
    expect(await sidecarRoute()).toBeCloseTo(route!, -2);
    expect(await sidecarStatus()).toMatch(new RegExp(`^${ROUTER.v4}:179\\s+65000\\s+Established`, 'm'));
  });

  it("flb sidecar keeps its 3 s BGP session Established while a saturating load goes through the sidecar's outbound port for 12 s", async () => {
    // The load: another user's connections to the router, redirected to the sidecar's outbound
    // port (the sidecar itself runs as root, so its own connections are not redirected back).
    await host.exec('iptables', [
      '-t',
      'nat',
      '-A',
      'OUTPUT',
      '-p',
      'tcp',
      '-d',
      ROUTER.v4,
      '--dport',
      String(LOAD_PORT),
      '-m',
      'owner',
      '--uid-owner',
      String(LOAD_UID),
      '-j',
      'REDIRECT',
      '--to-ports',
      '15001',
    ]);
    sink = nodeIn(router, ['-e', `require('net').createServer((s) => { s.resume(); s.on('error', () => {}); }).listen(${LOAD_PORT}, '${ROUTER.v4}')`], {});
    await new Promise((r) => setTimeout(r, 500));
    const since = await sidecarSince();
    expect(since).toBeDefined();
    const sidecarPid = Number((await host.exec('sh', ['-c', `ss -ltnp 'sport = :15001' | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2`])).stdout);
    const cpuTicks = () =>
      readFileSync(`/proc/${sidecarPid}/stat`, 'utf8')
        .split(') ')[1]!
        .split(' ')
        .slice(11, 13)
        .map(Number)
        .reduce((a, b) => a + b, 0);
    const ticksBefore = cpuTicks();
    const seconds = 12;
    const load = `const net = require('net'); const chunk = Buffer.alloc(65536); let bytes = 0; const end = Date.now() + ${seconds * 1000};
      for (let i = 0; i < 16; i++) { const s = net.connect(${LOAD_PORT}, '${ROUTER.v4}'); s.on('error', () => {});
        const pump = () => { while (Date.now() < end) { bytes += chunk.length; if (!s.write(chunk)) return void s.once('drain', pump); } s.destroy(); }; s.on('connect', pump); }
      setTimeout(() => { console.log(bytes); process.exit(0); }, ${seconds * 1000 + 200});`;
    const result = await host.exec('setpriv', ['--reuid', String(LOAD_UID), '--regid', String(LOAD_UID), '--clear-groups', process.execPath, '-e', load]);
    const ticks = cpuTicks() - ticksBefore;
    const mib = Number(result.stdout) / 2 ** 20;
    console.log(
      `through the sidecar's outbound port: ${(mib / seconds).toFixed(0)} MiB/s for ${seconds} s, the sidecar busy ${((ticks / 100 / seconds) * 100).toFixed(0)} % of a core; BGP hold time 3 s`,
    );
    expect(mib).toBeGreaterThan(100);
    expect(await sidecarSince()).toBeCloseTo(since!, -2);
    expect(await sidecarStatus()).toMatch(new RegExp(`^${ROUTER.v4}:179\\s+65000\\s+Established`, 'm'));
    expect(await birdRoutes('sidecar')).toEqual([`${SIDECAR_VIP}/32`]);
  }, 60_000);

  it('flb sidecar on SIGTERM: GRACEFUL_SHUTDOWN first, the VIP withdrawn after the drain time, the session closed, then exit', async () => {
    sidecar!.kill('SIGTERM');
    const stopped = Date.now();
    await eventually(
      'BIRD to see GRACEFUL_SHUTDOWN',
      async () => ((await bird!.show('route', 'protocol', 'sidecar', `${SIDECAR_VIP}/32`, 'all')).includes('(65535,0)') ? true : undefined),
      5_000,
      50,
    );
    await eventually('BIRD to drop the VIP', async () => ((await birdRoutes('sidecar')).length === 0 ? true : undefined), 10_000, 50);
    const drainedMs = Date.now() - stopped;
    expect(drainedMs).toBeGreaterThanOrEqual(2000);
    expect(drainedMs).toBeLessThan(4000);
    await eventually(
      'BIRD to see the session closed',
      async () => (/Received: Administrative shutdown/.test(await bird!.show('protocols', 'all', 'sidecar')) ? true : undefined),
      5_000,
    );
    expect((await sidecar!).exitCode).toBe(0);
    sidecarAppProcess?.kill('SIGKILL');
  });

  it("the app's preStop hook, as the injector writes it and run as the kubelet runs it: the VIP has left BIRD when the hook answers, before the app gets SIGTERM", async () => {
    // The hook the injector gives the app container of a pod annotated flomesh.io/bgp-announcer: "true".
    const injected = injectPod(
      {
        metadata: { name: 'w', namespace: 'shop', annotations: { [BGP_ANNOUNCER_ANNOTATION]: 'true' } },
        spec: { containers: [{ name: 'app', image: 'example/app' }] },
      },
      { metadata: { name: 'shop', labels: { [INJECT_LABEL]: 'enabled' } } },
      { mesh: defaultMesh(), nativeSidecars: true, version: 'e2e' },
    );
    const hook = (injected.action === 'inject' ? injected.patch.find((op) => op.path === '/spec/containers/0/lifecycle') : undefined) as
      { value: { preStop: { httpGet: { path: string; port: number } } } } | undefined;
    expect(hook?.value.preStop.httpGet).toEqual({ path: '/drain/bgp', port: 15902, scheme: 'HTTP' });
    const { path, port } = hook!.value.preStop.httpGet;

    sidecarAppProcess = sidecarApp();
    sidecar = startSidecar(join(work, 'sidecar-config'));
    await eventually(
      'BIRD to hold the VIP from the new sidecar',
      async () => ((await birdRoutes('sidecar')).join() === `${SIDECAR_VIP}/32` ? true : undefined),
      30_000,
    );
    // The kubelet: a GET on the pod's address, waiting for the answer before it sends the app SIGTERM.
    const started = Date.now();
    const kubelet = host.exec(
      process.execPath,
      [
        '-e',
        `require('http').get({ host: '${SIDECAR_HOST}', port: ${port}, path: '${path}', agent: false }, (res) => {
        let body = ''; res.on('data', (d) => (body += d)); res.on('end', () => console.log(JSON.stringify({ status: res.statusCode, body })));
      }).on('error', (e) => { console.error(e.message); process.exit(1); });`,
      ],
      { reject: false },
    );
    let gracefulSeen = false;
    let hookDone = false;
    void kubelet.then(() => (hookDone = true));
    while (!hookDone) {
      if ((await bird!.show('route', 'protocol', 'sidecar', `${SIDECAR_VIP}/32`, 'all')).includes('(65535,0)')) gracefulSeen = true;
      await new Promise((r) => setTimeout(r, 50));
    }
    const hookResult = await kubelet;
    expect(hookResult.stderr).toBe('');
    const answer = JSON.parse(hookResult.stdout) as { status: number; body: string };
    const hookMs = Date.now() - started;
    // Before the kubelet would send SIGTERM: the route is gone from the router and the app still serves.
    expect(await birdRoutes('sidecar')).toEqual([]);
    expect(sidecarAppProcess.exitCode).toBeNull();
    expect(
      (await host.exec(process.execPath, ['-e', `require('net').connect(${SIDECAR_APP_PORT}, '127.0.0.1').on('data', (d) => process.stdout.write(d))`])).stdout,
    ).toBe('sidecar app');
    expect(answer).toEqual({ status: 200, body: `withdrawn after a 2 s drain: ${SIDECAR_VIP}/32\n` });
    expect(gracefulSeen).toBe(true);
    expect(hookMs).toBeGreaterThanOrEqual(2000);
    expect(hookMs).toBeLessThan(4000);
    console.log(`preStop hook answered after ${hookMs} ms (drainSeconds 2), the VIP already gone from BIRD's RIB, the app still serving`);
    // Then the app stops, and the sidecar's own SIGTERM finds nothing left to drain.
    sidecarAppProcess.kill('SIGTERM');
    await sidecarAppProcess;
    const stopping = Date.now();
    sidecar!.kill('SIGTERM');
    expect((await sidecar!).exitCode).toBe(0);
    expect(Date.now() - stopping).toBeLessThan(1500);
  }, 60_000);
});
