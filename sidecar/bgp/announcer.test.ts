// The announcer as `flb bgp` runs it: the contract's BGP section, a real app behind a health check,
// a fake router on loopback (testing/fake-peer.ts).
import { afterAll, afterEach, describe, expect, it } from '@jest/globals';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { BgpSchema } from '../../common/contract/sidecar.js';
import { Announcer } from './announcer.js';
import { loadBgpConfig, startBgp } from './runner.js';
import { fetchBgpStatus, renderBgpStatus } from './status.js';
import { FakePeer, ribOf, routeUpdates } from './testing/fake-peer.js';
import { communityText, encodeNotification } from './wire/index.js';

const log = pino({ level: 'silent' });
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function app(port = 0): Promise<Server> {
  const server = createServer((s) => s.destroy());
  server.listen(port, '127.0.0.1');
  await once(server, 'listening');
  return server;
}

async function setUp(drainSeconds = 0) {
  const peer = await FakePeer.start({ as: 65000 });
  cleanups.push(() => peer.close());
  const appServer = await app();
  const appPort = (appServer.address() as { port: number }).port;
  cleanups.push(() => new Promise((r) => appServer.close(r)));
  const config = BgpSchema.parse({
    localAs: 65001,
    routerId: '192.0.2.1',
    connectRetrySeconds: 1,
    drainSeconds,
    peers: [{ address: '127.0.0.1', port: peer.port, remoteAs: 65000 }],
    vips: [
      {
        prefix: '198.51.100.10/32',
        communities: ['65001:100'],
        healthCheck: { protocol: 'tcp', port: appPort, intervalMs: 200, timeoutMs: 100, healthyThreshold: 2, unhealthyThreshold: 3 },
      },
    ],
  });
  const announcer = new Announcer(config, log);
  cleanups.push(() => announcer.stop());
  return { peer, appServer, appPort, announcer };
}

describe('a new section for the running announcer (reconfigure)', () => {
  it('withdraws a VIP removed, announces one added once its check passes, and keeps a VIP whose check changed until the new check fails, on the same session', async () => {
    const { peer, appPort, announcer } = await setUp();
    const section = (vips: Record<string, unknown>[]) =>
      BgpSchema.parse({
        localAs: 65001,
        routerId: '192.0.2.1',
        connectRetrySeconds: 1,
        drainSeconds: 0,
        peers: [{ address: '127.0.0.1', port: peer.port, remoteAs: 65000 }],
        vips,
      });
    const tcp = (port: number) => ({ protocol: 'tcp', port, intervalMs: 100, timeoutMs: 100, healthyThreshold: 1, unhealthyThreshold: 2 });
    await announcer.start();
    await peer.until('the VIP', (r) => (ribOf(r).join() === '198.51.100.10/32' ? true : undefined));

    await announcer.reconfigure(section([{ prefix: '198.51.100.11/32', healthCheck: tcp(appPort) }]));
    await peer.until('the old VIP withdrawn and the new one announced', (r) => (ribOf(r).join() === '198.51.100.11/32' ? true : undefined));

    // A check toward a port nothing listens on: the route stays until it has failed twice (2 x 100 ms).
    const placeholder = await app();
    const deadPort = (placeholder.address() as { port: number }).port;
    await new Promise((r) => placeholder.close(r));
    const changed = Date.now();
    await announcer.reconfigure(section([{ prefix: '198.51.100.11/32', healthCheck: tcp(deadPort) }]));
    expect(announcer.status().vips).toEqual([expect.objectContaining({ prefix: '198.51.100.11/32', healthy: true, announced: true })]);
    await peer.until('the withdrawal by the new check', (r) => (ribOf(r).length === 0 ? true : undefined));
    expect(Date.now() - changed).toBeGreaterThanOrEqual(100);
    expect(peer.connections).toBe(1);
    expect(peer.received.filter((m) => m.type === 'notification')).toEqual([]);
  });

  it('refused as a whole, changing nothing, when the listener for a passive peer cannot open', async () => {
    const { peer, appPort, announcer } = await setUp();
    await announcer.start();
    await peer.until('the VIP', (r) => (ribOf(r).length === 1 ? true : undefined));
    const taken = await app();
    cleanups.push(() => new Promise((r) => taken.close(r)));
    const config = BgpSchema.parse({
      localAs: 65001,
      routerId: '192.0.2.1',
      listenAddress: '127.0.0.1',
      listenPort: (taken.address() as { port: number }).port,
      peers: [{ address: '127.0.0.2', remoteAs: 65000, passive: true }],
      vips: [{ prefix: '198.51.100.12/32', healthCheck: { protocol: 'tcp', port: appPort } }],
    });
    await expect(announcer.reconfigure(config)).rejects.toThrow(/the BGP listener for passive peers.*127\.0\.0\.1/);
    await new Promise((r) => setTimeout(r, 300));
    expect(announcer.status().peers).toEqual([expect.objectContaining({ peer: `127.0.0.1:${peer.port}`, state: 'Established' })]);
    expect(announcer.status().vips.map((v) => v.prefix)).toEqual(['198.51.100.10/32']);
    expect(ribOf(peer.received)).toEqual(['198.51.100.10/32']);
    expect(peer.connections).toBe(1);
  });
});

describe('health-gated VIPs', () => {
  it('announces a VIP once its app passes, withdraws it within the fall budget when the app dies, and announces it again on recovery', async () => {
    const { peer, appServer, appPort, announcer } = await setUp();
    announcer.start();
    await peer.until('the VIP', (r) => (ribOf(r).join() === '198.51.100.10/32' ? true : undefined));
    expect(announcer.status().vips).toEqual([expect.objectContaining({ prefix: '198.51.100.10/32', healthy: true, announced: true })]);
    await new Promise((r) => appServer.close(r));
    const died = Date.now();
    await peer.until('the withdrawal', (r) => (ribOf(r).length === 0 ? true : undefined));
    const withdrawMs = Date.now() - died;
    // 200 ms interval, 3 failures: at most 600 ms, plus the check that was under way
    expect(withdrawMs).toBeLessThan(900);
    const again = await app(appPort);
    cleanups.push(() => new Promise((r) => again.close(r)));
    await peer.until('the VIP again', (r) => (ribOf(r).length === 1 ? true : undefined));
    expect(peer.connections).toBe(1);
    expect(announcer.status().peers[0]!.state).toBe('Established');
  });

  it('drains on stop: GRACEFUL_SHUTDOWN first, the withdrawal after drainSeconds, then Cease', async () => {
    const { peer, announcer } = await setUp(1);
    announcer.start();
    await peer.until('the VIP', (r) => (ribOf(r).length === 1 ? true : undefined));
    const before = routeUpdates(peer.received).length;
    const started = Date.now();
    const drained = announcer.drain();
    const graceful = await peer.until('GRACEFUL_SHUTDOWN', (r) =>
      routeUpdates(r)
        .slice(before)
        .find((u) => u.attributes.communities?.length === 2),
    );
    expect(graceful.attributes.communities!.map(communityText)).toEqual(['65001:100', '65535:0']);
    expect(ribOf(peer.received)).toEqual(['198.51.100.10/32']);
    await drained;
    expect(Date.now() - started).toBeGreaterThanOrEqual(1000);
    expect(ribOf(peer.received)).toEqual([]);
    expect(await peer.until('Cease', (r) => r.find((m) => m.type === 'notification'))).toMatchObject({ code: 6, subcode: 2 });
  });
});

describe('flb bgp', () => {
  const dir = mkdtempSync(join(tmpdir(), 'flb-bgp-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const file = (name: string, text: string) => {
    writeFileSync(join(dir, name), text);
    return join(dir, name);
  };

  it('refuses a configuration naming each bad field, and a TCP MD5 password it cannot honour', async () => {
    const bad = file(
      'bad.yaml',
      'localAs: 70000000000\nrouterId: 192.0.2.1\npeers:\n  - address: 10.0.0.300\n    remoteAs: 65000\nvips:\n  - prefix: 198.51.100.10/33\n    healthCheck: { protocol: tcp, port: 8080 }\n',
    );
    await expect(loadBgpConfig(bad)).rejects.toThrow(
      `invalid ${bad}: localAs: must be an AS number, 1-4294967295; peers[0].address: must be an IPv4 or IPv6 address; vips[0].prefix: must be a CIDR such as 10.0.0.0/8 or fd00::/8`,
    );
    const md5 = file(
      'md5.json',
      JSON.stringify({ localAs: 65001, routerId: '192.0.2.1', peers: [{ address: '10.0.0.1', remoteAs: 65000, passwordRef: 'bgp-secret' }], vips: [] }),
    );
    await expect(loadBgpConfig(md5)).rejects.toThrow(`invalid ${md5}: peers[0].passwordRef: TCP MD5 (RFC 2385) is not built yet`);
    await expect(loadBgpConfig(join(dir, 'missing.yaml'))).rejects.toThrow(/cannot read the BGP configuration/);
    await expect(loadBgpConfig(file('broken.yaml', 'peers: [\n'))).rejects.toThrow(/is not YAML or JSON/);
    await expect(loadBgpConfig(file('broken.json', '{ "localAs": '))).rejects.toThrow(/is not YAML or JSON/);
  });

  it('serves its status (peers and VIPs with their health) for flb bgp status', async () => {
    const peer = await FakePeer.start({ as: 65000 });
    cleanups.push(() => peer.close());
    const config = await loadBgpConfig(
      file(
        'ok.yaml',
        `localAs: 65001\nrouterId: 192.0.2.1\ndrainSeconds: 0\nconnectRetrySeconds: 1\npeers:\n  - address: 127.0.0.1\n    port: ${peer.port}\n    remoteAs: 65000\nvips:\n  - prefix: 198.51.100.10/32\n    healthCheck: { protocol: tcp, port: 1, intervalMs: 100 }\n`,
      ),
    );
    const running = await startBgp(config, { host: '127.0.0.1', port: 0 }, log, { vipsOnLoopback: false });
    cleanups.push(() => running.stop());
    const url = `http://127.0.0.1:${(running.admin.address() as { port: number }).port}`;
    await peer.until('established', () => (running.announcer.status().peers[0]!.state === 'Established' ? true : undefined));
    await peer.until('a failed check', () => (running.announcer.status().vips[0]!.lastResult ? true : undefined));
    const status = await fetchBgpStatus(url);
    const text = renderBgpStatus(status);
    expect(text).toMatch(new RegExp(`^127\\.0\\.0\\.1:${peer.port}\\s+65000\\s+Established\\s+\\d+s\\s+ipv4-unicast,ipv6-unicast\\s+0\\s+0`, 'm'));
    expect(text).toMatch(/^198\.51\.100\.10\/32\s+unhealthy \(\d+ in a row\)\s+no\s+ECONNREFUSED, \d+s ago/m);
    // Prometheus: states when scraped, events counted (the peer's Cease, then the session again)
    peer.send(encodeNotification(6, 4));
    await peer.until('the second session', () => (peer.connections === 2 && running.announcer.status().peers[0]!.state === 'Established' ? true : undefined));
    const metrics = await (await fetch(`${url}/metrics`)).text();
    const peerLabel = `peer="127.0.0.1:${peer.port}"`;
    expect(metrics).toContain(`flb_bgp_session_established{${peerLabel},remote_as="65000"} 1`);
    expect(metrics).toContain(`flb_bgp_notifications_total{${peerLabel},direction="received",code="6",subcode="4"} 1`);
    expect(metrics).toContain(`flb_bgp_session_down_total{${peerLabel}} 1`);
    expect(metrics).toContain('flb_bgp_vip_healthy{vip="198.51.100.10/32"} 0');
    expect(metrics).toContain('flb_bgp_vip_announced{vip="198.51.100.10/32"} 0');
    // Node's process metrics under their standard names, as in every component (common/metrics.ts).
    expect(metrics).toMatch(/^process_resident_memory_bytes \d+/m);
    expect(metrics).not.toContain('flb_bgp_process_');
    await expect(fetchBgpStatus('http://127.0.0.1:1')).rejects.toThrow(/cannot reach the BGP announcer at http:\/\/127.0.0.1:1/);
  });
});
