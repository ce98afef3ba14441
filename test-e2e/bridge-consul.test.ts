// The Consul source end to end: a real Consul v1.16.1 agent (-dev), a real apiserver, the repo,
// and the bridge publishing what Consul holds. Instances are registered on nodes of their own
// through /v1/catalog/register, as external services are, so their checks change only when the
// test says.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api } from '@kubernetes/client-node';
import { API_VERSION, BridgeConfigSchema, type BridgeConfig, type Service } from '../common/contract/index.js';
import { createLogger } from '../common/log.js';
import { createCertificateAuthority, issueCertificate } from '../common/pki.js';
import { startConsul, type ConsulAgent } from '../devenv/consul.js';
import { startControlPlane, type ControlPlane } from '../devenv/controlplane.js';
import { startBridge, type Bridge } from '../registry-bridge/bridge.js';
import { Repo } from '../repo/repo.js';
import { startRepoServer, type RepoServer } from '../repo/server.js';
import { DiskStore } from '../repo/store/disk.js';
import { eventually } from './harness/eventually.js';

const log = createLogger('bridge-consul-test', process.env.FLB_TEST_LOG === '1' ? 'debug' : 'silent');
const CONTROL = 'flomesh';
const GRACE_SECONDS = 3;
const STALE_SECONDS = 4;
const VIP_RANGE = '240.240.0.0/29';

describe('the Consul source against a real Consul and the real control plane', () => {
  let plane: ControlPlane;
  let consul: ConsulAgent;
  let dir: string;
  let repo: Repo;
  let server: RepoServer;
  let bridge: Bridge | undefined;

  const config = (): BridgeConfig =>
    BridgeConfigSchema.parse({
      apiVersion: API_VERSION,
      kind: 'BridgeConfig',
      mesh: { configMap: { namespace: CONTROL, name: 'flb-mesh' } },
      sources: [
        { kind: 'kubernetes' },
        {
          kind: 'consul',
          address: consul.url,
          removeAfterSeconds: GRACE_SECONDS,
          staleAfterSeconds: STALE_SECONDS,
          waitSeconds: 2,
          sweepIntervalSeconds: 1,
          // One fetch at a time: services reach the catalog in Consul's (name) order, as the restart test needs.
          fetchConcurrency: 1,
        },
      ],
      sinks: [{ kind: 'repo', url: `http://127.0.0.1:${server.port}` }],
      leaderElection: { namespace: CONTROL, leaseDurationSeconds: 4, renewDeadlineSeconds: 3, retryPeriodSeconds: 1 },
    });
  const consulStatus = () => bridge!.status().sources.find((s) => s.kind === 'consul')!;
  const serviceFile = async (id: string): Promise<Service | undefined> => {
    const text = await repo.readFile('/flb/mesh', `/services/${id}.json`);
    return text === undefined ? undefined : (JSON.parse(text.toString()) as Service);
  };
  const register = async (node: string, address: string, service: Record<string, unknown>, status = 'passing') => {
    const id = service.ID as string;
    const checks = status === 'none' ? [] : [{ CheckID: `service:${id}`, Name: `${id} health`, Status: status, ServiceID: id }];
    const r = await consul.api('PUT', '/v1/catalog/register', { Node: node, Address: address, Service: service, Checks: checks });
    expect(r).toMatchObject({ status: 200, body: true });
  };
  const setCheck = async (node: string, address: string, id: string, status: string) => {
    const r = await consul.api('PUT', '/v1/catalog/register', {
      Node: node,
      Address: address,
      SkipNodeUpdate: true,
      Check: { CheckID: `service:${id}`, Name: `${id} health`, Status: status, ServiceID: id },
    });
    expect(r).toMatchObject({ status: 200, body: true });
  };
  const deregister = async (node: string, serviceId: string) => {
    expect(await consul.api('PUT', '/v1/catalog/deregister', { Node: node, ServiceID: serviceId })).toMatchObject({ status: 200 });
  };
  const endpointsOf = (svc: Service | undefined) => svc?.endpoints.map((e) => `${e.address}:${e.port}${e.healthy ? '' : ' unhealthy'} w${e.weight}`);
  const registerWeb = async () => {
    await register('vm-1', '10.1.0.1', { ID: 'web-1', Service: 'web', Port: 8080, Weights: { Passing: 3, Warning: 1 } });
    await register('vm-2', '10.1.0.2', { ID: 'web-2', Service: 'web', Port: 8080 });
    // The service's own address wins over its node's (Consul's rule), on its own port.
    await register('vm-3', '10.1.0.3', { ID: 'web-3', Service: 'web', Address: '10.1.1.3', Port: 9090 });
  };

  beforeAll(async () => {
    [plane, consul] = await Promise.all([startControlPlane(), startConsul()]);
    const core = plane.kubeConfig.makeApiClient(CoreV1Api);
    await core.createNamespace({ body: { metadata: { name: CONTROL } } });
    // Six VIPs (240.240.0.1-6): small enough that arrival order decides who gets which, unless the published ones are read back.
    await core.createNamespacedConfigMap({
      namespace: CONTROL,
      body: { metadata: { name: 'flb-mesh' }, data: { 'mesh.yaml': `apiVersion: ${API_VERSION}\nkind: Mesh\nname: flb\nvipRanges: [${VIP_RANGE}]\n` } },
    });
    dir = mkdtempSync(join(tmpdir(), 'flb-bridge-consul-'));
    repo = await new Repo(await new DiskStore(dir).init()).load();
    server = await startRepoServer({ repo, host: '127.0.0.1', port: 0, log });
  });
  afterAll(async () => {
    await bridge?.stop();
    await server?.close();
    await consul?.stop();
    await plane?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('publishes a Consul service with its instances, its Consul DNS names and a VIP from the mesh range', async () => {
    await registerWeb();
    bridge = await startBridge({ config: config(), kubeConfig: plane.kubeConfig, log, identity: 'bridge-a' });
    const web = await eventually('web.dc1.consul published with three endpoints', async () => {
      const svc = await serviceFile('web.dc1.consul');
      return svc?.endpoints.length === 3 ? svc : undefined;
    });
    expect(web).toMatchObject({
      name: 'web',
      source: 'consul',
      registry: 'dc1',
      hostnames: ['web.service.consul', 'web.service.dc1.consul', 'web.dc1.consul'],
      ports: [{ port: 8080, protocol: 'tcp' }],
      labels: { 'flomesh.io/origin': 'consul' },
    });
    expect(web.vips).toEqual([{ address: expect.stringMatching(/^240\.240\.0\.[1-6]$/), allocation: 'mesh' }]);
    expect(endpointsOf(web)).toEqual(['10.1.0.1:8080 w3', '10.1.0.2:8080 w1', '10.1.1.3:9090 w1']);
    // Consul's own service (the agent) is left out by default.
    expect(await serviceFile('consul.dc1.consul')).toBeUndefined();
    await eventually('the consul source synced', async () => (consulStatus().state === 'synced' ? true : undefined));
    expect(consulStatus()).toMatchObject({ kind: 'consul', address: `${consul.url} (dc1)`, services: 1, endpoints: 3, errors: 0 });
  });

  it('marks an instance whose check turns critical unhealthy, and healthy again when it passes', async () => {
    await setCheck('vm-2', '10.1.0.2', 'web-2', 'critical');
    await eventually('web-2 unhealthy', async () =>
      endpointsOf(await serviceFile('web.dc1.consul'))?.includes('10.1.0.2:8080 unhealthy w1') ? true : undefined,
    );
    // A warning instance takes no traffic either (healthy: passing), at its warning weight.
    await setCheck('vm-1', '10.1.0.1', 'web-1', 'warning');
    await eventually('web-1 warning', async () =>
      endpointsOf(await serviceFile('web.dc1.consul'))?.includes('10.1.0.1:8080 unhealthy w1') ? true : undefined,
    );
    await setCheck('vm-1', '10.1.0.1', 'web-1', 'passing');
    await setCheck('vm-2', '10.1.0.2', 'web-2', 'passing');
    await eventually('both healthy again', async () =>
      endpointsOf(await serviceFile('web.dc1.consul'))?.join() === '10.1.0.1:8080 w3,10.1.0.2:8080 w1,10.1.1.3:9090 w1' ? true : undefined,
    );
  });

  it('sees an instance registered without any check (no check changes: a sweep finds it)', async () => {
    await register('vm-4', '10.1.0.4', { ID: 'web-4', Service: 'web', Port: 8080 }, 'none');
    await eventually(
      'web-4 published',
      async () => (endpointsOf(await serviceFile('web.dc1.consul'))?.includes('10.1.0.4:8080 w1') ? true : undefined),
      20_000,
    );
    await deregister('vm-4', 'web-4');
    await eventually('web-4 gone', async () => (endpointsOf(await serviceFile('web.dc1.consul'))?.length === 3 ? true : undefined), 20_000);
  });

  it('removes a deregistered service only after its grace: its endpoints at once, its file and name after', async () => {
    await register('vm-9', '10.1.0.9', { ID: 'gone-1', Service: 'gone', Port: 7000 });
    const published = await eventually('gone.dc1.consul published', () => serviceFile('gone.dc1.consul'));
    expect(published.endpoints).toHaveLength(1);
    const deregisteredAt = Date.now();
    await deregister('vm-9', 'gone-1');
    await eventually('gone.dc1.consul without endpoints', async () => ((await serviceFile('gone.dc1.consul'))?.endpoints.length === 0 ? true : undefined));
    expect((await serviceFile('gone.dc1.consul'))!.vips).toEqual(published.vips);
    const removed = await eventually(
      'gone.dc1.consul removed',
      async () => ((await serviceFile('gone.dc1.consul')) === undefined ? Date.now() : undefined),
      20_000,
    );
    // Never before the grace (its timer starts when the bridge sees the deregistration, after this).
    expect(removed - deregisteredAt).toBeGreaterThanOrEqual(GRACE_SECONDS * 1000);
  });

  it('keeps the last good state while Consul is away, and reads stale', async () => {
    await bridge!.settled();
    const before = { version: repo.get('/flb/mesh')!.version, web: await serviceFile('web.dc1.consul') };
    await consul.halt();
    await eventually('the consul source stale', async () => (consulStatus().state === 'stale' ? true : undefined), 20_000);
    expect(consulStatus().errors).toBeGreaterThan(0);
    expect(consulStatus().lastError).toMatch(/ECONNREFUSED|socket hang up|ECONNRESET/);
    expect(repo.get('/flb/mesh')!.version).toBe(before.version);
    expect(await serviceFile('web.dc1.consul')).toEqual(before.web);
    expect(bridge!.status().sources.find((s) => s.kind === 'kubernetes')!.state).toBe('synced');
    // A dev agent keeps nothing: registered again, it is back as it was, and the source fresh.
    await consul.resume();
    await registerWeb();
    await eventually('the consul source synced again', async () => (consulStatus().state === 'synced' ? true : undefined), 20_000);
    await bridge!.settled();
    expect(await serviceFile('web.dc1.consul')).toEqual(before.web);
  });

  it('republishes nothing unchanged after a restart, and keeps the VIPs', async () => {
    // gamma comes first and takes the VIP its hash points at; cart's hash points there too, so it
    // takes the next. After a restart Consul lists cart before gamma: only the VIPs read back from
    // the published catalog keep each where sidecars know it.
    await register('vm-6', '10.1.0.6', { ID: 'gamma-1', Service: 'gamma', Port: 8000 });
    const gamma = await eventually('gamma.dc1.consul published', () => serviceFile('gamma.dc1.consul'));
    await register('vm-7', '10.1.0.7', { ID: 'cart-1', Service: 'cart', Port: 8000 });
    const cart = await eventually('cart.dc1.consul published', () => serviceFile('cart.dc1.consul'));
    await bridge!.settled();
    const before = { version: repo.get('/flb/mesh')!.version, web: await serviceFile('web.dc1.consul') };
    await bridge!.stop();
    bridge = await startBridge({ config: config(), kubeConfig: plane.kubeConfig, log, identity: 'bridge-b' });
    await eventually('the restarted bridge leading and synced', async () => {
      const s = bridge!.status();
      return s.leader && s.sinks.length > 0 && s.sources.every((x) => x.state === 'synced') ? true : undefined;
    });
    await bridge.settled();
    expect((await serviceFile('gamma.dc1.consul'))!.vips).toEqual(gamma.vips);
    expect((await serviceFile('cart.dc1.consul'))!.vips).toEqual(cart.vips);
    expect((await serviceFile('web.dc1.consul'))!.vips).toEqual(before.web!.vips);
    expect(repo.get('/flb/mesh')!.version).toBe(before.version);
  });

  it('deletes nothing Consul registered when the bridge restarts while Consul is down', async () => {
    await bridge!.settled();
    const before = { version: repo.get('/flb/mesh')!.version, web: await serviceFile('web.dc1.consul') };
    await bridge!.stop();
    await consul.halt();
    bridge = await startBridge({ config: config(), kubeConfig: plane.kubeConfig, log, identity: 'bridge-c' });
    await eventually('the restarted bridge leading with its sinks', async () => {
      const s = bridge!.status();
      return s.leader && s.sinks.length > 0 && s.sources.find((x) => x.kind === 'kubernetes')!.state === 'synced' ? true : undefined;
    });
    // Rounds of the publisher go by; none may take away what the Consul source has not listed yet.
    for (let i = 0; i < 5; i++) {
      await bridge.settled();
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    expect(consulStatus()).toMatchObject({ state: 'starting', lastError: expect.stringMatching(/ECONNREFUSED/) });
    expect(await serviceFile('web.dc1.consul')).toEqual(before.web);
    expect(repo.get('/flb/mesh')!.version).toBe(before.version);
    // Back, and empty (a dev agent keeps nothing): once it has listed, what it no longer has goes.
    await consul.resume();
    await eventually('the consul source synced', async () => (consulStatus().state === 'synced' ? true : undefined), 20_000);
    await eventually('web.dc1.consul erased', async () => ((await serviceFile('web.dc1.consul')) === undefined ? true : undefined));
  });

  it('reads a Consul with ACLs over HTTPS: a refused token changes nothing, the right one in the token file is picked up', async () => {
    const ca = createCertificateAuthority('flb-test-consul-ca');
    // Only the name, not 127.0.0.1: the source must check the certificate against tls.serverName.
    const cert = issueCertificate(ca, { commonName: 'server.dc2.consul', usage: 'server', dnsNames: ['server.dc2.consul'] });
    const secure = await startConsul({
      datacenter: 'dc2',
      aclManagementToken: 'flb-test-management-token',
      tls: { caPem: ca.certPem, certPem: cert.certPem, keyPem: cert.keyPem, serverName: 'server.dc2.consul' },
    });
    try {
      const policy = await secure.api('PUT', '/v1/acl/policy', {
        Name: 'flb-bridge',
        Rules: 'service_prefix "" { policy = "read" }\nnode_prefix "" { policy = "read" }\nagent_prefix "" { policy = "read" }',
      });
      expect(policy.status).toBe(200);
      const token = await secure.api('PUT', '/v1/acl/token', { Description: 'flb bridge', Policies: [{ Name: 'flb-bridge' }] });
      const secret = (token.body as { SecretID: string }).SecretID;
      expect(
        await secure.api('PUT', '/v1/catalog/register', { Node: 'vm-1', Address: '10.2.0.1', Service: { ID: 'pay-1', Service: 'pay', Port: 8443 } }),
      ).toMatchObject({ status: 200 });
      const tokenFile = join(dir, 'consul-token');
      const caFile = join(dir, 'consul-ca.pem');
      writeFileSync(tokenFile, 'not-the-token\n');
      writeFileSync(caFile, ca.certPem);
      await bridge?.stop();
      const secureConfig = BridgeConfigSchema.parse({
        ...config(),
        sources: [
          { kind: 'kubernetes' },
          {
            kind: 'consul',
            address: secure.url,
            tokenFile,
            tls: { caFile, serverName: 'server.dc2.consul' },
            waitSeconds: 2,
            staleAfterSeconds: STALE_SECONDS,
          },
        ],
      });
      bridge = await startBridge({ config: secureConfig, kubeConfig: plane.kubeConfig, log, identity: 'bridge-d' });
      const refused = await eventually('the token refused', async () =>
        consulStatus().lastError?.includes('ACL token was refused') ? consulStatus() : undefined,
      );
      expect(refused.state).toBe('starting');
      expect(await serviceFile('pay.dc2.consul')).toBeUndefined();
      // The Secret is rotated: the file gets the right token; the source reads it again after a refusal.
      writeFileSync(tokenFile, `${secret}\n`);
      const pay = await eventually('pay.dc2.consul published', () => serviceFile('pay.dc2.consul'), 30_000);
      expect(pay).toMatchObject({ registry: 'dc2', hostnames: ['pay.service.consul', 'pay.service.dc2.consul', 'pay.dc2.consul'] });
      expect(pay.endpoints.map((e) => `${e.address}:${e.port}`)).toEqual(['10.2.0.1:8443']);
      expect(consulStatus()).toMatchObject({ state: 'synced', address: `${secure.url} (dc2)` });
    } finally {
      await bridge?.stop();
      bridge = undefined;
      await secure.stop();
    }
  });
});
