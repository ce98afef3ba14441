/*
 * The real `flb sidecar`, unchanged, behind eBPF interception instead of iptables: the pod's
 * namespace has no outbound or DNS nat rule, only the inbound one eBPF mode keeps (to 15003, as
 * the node agent writes it); the programs are attached to a cgroup of the test's own and the
 * namespace is registered. The sidecar (UID 1500) and the app (UID 1000) join the cgroup, then
 * the namespace. Two endpoints live in namespaces of their own on veth pairs. A stand-in for a
 * CNI's socket load balancer (bpf/testing/socket-lb.bpf.c) is attached to the cgroup before ours:
 * it sends LB_CLUSTER_IP:80 to the pod LB_ENDPOINT:8080, a third endpoint, as Cilium's or Calico's
 * does with a ClusterIP, so the sidecar sees a pod address and falls back on the catalog's
 * endpoint-to-service map (mesh.json `outbound.endpointFallback`, on in eBPF mode).
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { execa, type ResultPromise } from 'execa';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { API_VERSION, InterceptionSchema } from '../common/contract/index.js';
import { checkFeatures, defaultCgroup, load, objectPath, register, unload } from '../bpf/loader.js';
import { applyInterception } from '../cni/iptables.js';
import { eventually } from './harness/eventually.js';
import { createNetns, deleteNetns, link, removeStaleNamespaces, requireRoot, type Netns } from './harness/netns.js';

const fixtures = fileURLToPath(new URL('./fixtures/', import.meta.url));
const flb = fileURLToPath(new URL('../bin/flb.js', import.meta.url));
const APP_UID = 1000;
const PROXY_UID = 1500;
const MESH = `flbt-${process.pid}-s`;
const EP = ['10.217.1.2', '10.217.2.2'] as const;
const CLUSTER_IP = '10.96.0.20';
/** What the stand-in socket load balancer rewrites: this ClusterIP's port 80 to LB_ENDPOINT:8080. */
const LB_CLUSTER_IP = '10.96.0.10';
const LB_ENDPOINT = '10.200.0.5';
const VIP = '240.240.0.20';
const ID = 'pod.shop.app-1';
/** The pod's own address (on the veth to the first endpoint) and its app's port, which answers with the address it sees the connection come from. */
const POD_IP = '10.217.1.1';
const APP_PORT = 7070;
const APP_SERVER = `require('node:net').createServer((s) => s.on('error', () => {}).end(s.remoteAddress)).listen(${APP_PORT}, () => console.log('ready'))`;

const orders = {
  apiVersion: API_VERSION,
  kind: 'Service',
  id: 'orders.shop',
  name: 'orders',
  namespace: 'shop',
  source: 'kubernetes',
  vips: [{ address: CLUSTER_IP, allocation: 'cluster-ip' }],
  ports: [
    { name: 'tcp', port: 9090, protocol: 'tcp' },
    { name: 'http', port: 8080, protocol: 'http' },
  ],
  endpoints: EP.map((address) => ({ address, port: 9090, ports: { http: 8080 } })),
  policy: { retries: { attempts: 2, on: ['connect-failure', 'gateway-error'] } },
};
/** The service behind the socket load balancer: the pod it picks, and ep1. */
const web = {
  apiVersion: API_VERSION,
  kind: 'Service',
  id: 'web.shop',
  name: 'web',
  namespace: 'shop',
  source: 'kubernetes',
  vips: [{ address: LB_CLUSTER_IP, allocation: 'cluster-ip' }],
  ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'http' }],
  endpoints: [LB_ENDPOINT, EP[0]].map((address) => ({ address, port: 8080 })),
};
const payments = {
  apiVersion: API_VERSION,
  kind: 'Service',
  id: 'payments.dc1.consul',
  name: 'payments',
  registry: 'dc1',
  source: 'consul',
  hostnames: ['payments.service.consul'],
  vips: [{ address: VIP, allocation: 'mesh' }],
  ports: [{ name: 'tcp', port: 9090, protocol: 'tcp' }],
  endpoints: [{ address: EP[0], port: 9090 }],
};

describe('flb sidecar behind eBPF interception', () => {
  let cgroup: string;
  let app: Netns;
  const eps: Netns[] = [];
  let work: string;
  const children: ResultPromise[] = [];
  let sidecar: ResultPromise | undefined;
  let lbEndpoint: ResultPromise;
  const pinDir = `/sys/fs/bpf/flbt-${process.pid}-bpf-sidecar`;

  /** Joins the test's cgroup, then the namespace (which remounts /sys), then becomes the user. */
  const inCgroup = (ns: Netns, args: string[], uid?: number, env: Record<string, string> = {}) => {
    const asUser = uid !== undefined ? [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups'] : [];
    return execa(
      'sh',
      ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup, 'ip', 'netns', 'exec', ns.name, 'setpriv', ...asUser, '--pdeathsig', 'KILL', '--', ...args],
      {
        reject: false,
        env,
        extendEnv: true,
      },
    );
  };
  const client = async (...args: string[]) => {
    const result = await inCgroup(app, [process.execPath, `${fixtures}sidecar-client.mjs`, ...args], APP_UID);
    if (result.exitCode !== 0) throw new Error(`the client failed: ${result.stderr}`);
    return JSON.parse(result.stdout) as Record<string, unknown>;
  };
  const counts = async (mode: 'tcp' | 'http', host: string, port: number, n: number) => (await client(mode, host, String(port), String(n))).counts;

  beforeAll(async () => {
    requireRoot('the eBPF interception tests');
    const cgroupRoot = defaultCgroup();
    const report = await checkFeatures(cgroupRoot ? { cgroup: cgroupRoot } : {});
    const socketLb = objectPath('testing/socket-lb.bpf.o');
    if (!report.ok || !socketLb)
      throw new Error(
        `the eBPF tests cannot run here: ${[...report.missing, ...(socketLb ? [] : ['bpf/build/testing/socket-lb.bpf.o'])].join('; ')}. Install clang libbpf-dev bpftool (npm run setup) and run bash scripts/build-native.sh`,
      );
    await removeStaleNamespaces();
    cgroup = join(cgroupRoot!, `flbt-${process.pid}-bpf-sidecar`);
    mkdirSync(cgroup, { recursive: true });
    // The CNI's socket load balancer, attached first (the older way: BPF_PROG_ATTACH, multi).
    mkdirSync(pinDir, { recursive: true });
    await execa('bpftool', ['prog', 'load', socketLb, `${pinDir}/socket-lb`, 'type', 'cgroup/connect4']);
    await execa('bpftool', ['cgroup', 'attach', cgroup, 'connect4', 'pinned', `${pinDir}/socket-lb`, 'multi']);
    work = mkdtempSync(join(tmpdir(), 'flb-bpf-sidecar-'));
    const configDir = join(work, 'config');
    mkdirSync(join(configDir, 'services'), { recursive: true });
    mkdirSync(join(work, 'state'));
    chmodSync(work, 0o777);
    chmodSync(join(work, 'state'), 0o777);

    app = await createNetns('bpf-app');
    for (let i = 0; i < EP.length; i++) {
      const ep = await createNetns(`bpf-ep${i + 1}`);
      eps.push(ep);
      await link(app, [`10.217.${i + 1}.1/24`], ep, [`${EP[i]}/24`]);
      await ep.exec('ip', ['route', 'add', 'default', 'via', `10.217.${i + 1}.1`]);
      const endpoint = execa(
        'ip',
        ['netns', 'exec', ep.name, 'setpriv', '--pdeathsig', 'KILL', '--', process.execPath, `${fixtures}sidecar-endpoint.mjs`, `ep${i + 1}`, EP[i]!],
        {
          reject: false,
        },
      );
      children.push(endpoint);
      await new Promise<void>((resolve, reject) => {
        endpoint.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
        void endpoint.then((r) => reject(new Error(`an endpoint exited: ${r.stderr}`)));
      });
    }
    const lbNs = await createNetns('bpf-ep3');
    eps.push(lbNs);
    await link(app, ['10.200.0.1/24'], lbNs, [`${LB_ENDPOINT}/24`]);
    lbEndpoint = execa(
      'ip',
      ['netns', 'exec', lbNs.name, 'setpriv', '--pdeathsig', 'KILL', '--', process.execPath, `${fixtures}sidecar-endpoint.mjs`, 'ep3', LB_ENDPOINT],
      { reject: false },
    );
    children.push(lbEndpoint);
    await new Promise<void>((resolve, reject) => {
      lbEndpoint.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
      void lbEndpoint.then((r) => reject(new Error(`an endpoint exited: ${r.stderr}`)));
    });
    // A default route covers ClusterIPs and the mesh VIP range, or connect() fails before our program runs.
    await app.exec('ip', ['route', 'add', 'default', 'via', EP[0]]);

    await load({ mesh: MESH, cgroup });
    const settings = InterceptionSchema.parse({ version: 1, mode: 'ebpf', ipv6: 'disabled', proxyUid: PROXY_UID });
    await register({ mesh: MESH, netns: app.path, settings });
    // What the node agent writes in eBPF mode: the inbound rule only.
    await applyInterception(settings, { netns: app.path });
    const appServer = inCgroup(app, [process.execPath, '-e', APP_SERVER], APP_UID);
    children.push(appServer);
    await new Promise<void>((resolve, reject) => {
      appServer.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
      void appServer.then((r) => reject(new Error(`the app exited: ${r.stderr}`)));
    });

    writeFileSync(join(configDir, 'mesh.json'), JSON.stringify({ apiVersion: API_VERSION, kind: 'Mesh', name: 'flb', interception: { mode: 'ebpf' } }));
    writeFileSync(
      join(configDir, 'sidecar.json'),
      JSON.stringify({
        apiVersion: API_VERSION,
        kind: 'Sidecar',
        id: ID,
        mesh: 'flb',
        identity: { kind: 'pod', namespace: 'shop', name: 'app-1', serviceAccount: 'default' },
        dns: { searchDomains: ['shop.svc.cluster.local', 'svc.cluster.local', 'cluster.local'] },
      }),
    );
    writeFileSync(join(configDir, 'services', 'orders.shop.json'), JSON.stringify(orders));
    writeFileSync(join(configDir, 'services', 'payments.dc1.consul.json'), JSON.stringify(payments));
    writeFileSync(join(configDir, 'services', 'web.shop.json'), JSON.stringify(web));

    sidecar = inCgroup(
      app,
      [process.execPath, flb, 'sidecar', '--id', ID, '--state-dir', join(work, 'state'), '--config-dir', configDir, '--drain', '1s'],
      PROXY_UID,
      {
        FLB_LOG_LEVEL: 'warn',
        POD_NAMESPACE: 'shop',
      },
    );
    let stderr = '';
    sidecar.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    let exited = false;
    void sidecar.then(() => (exited = true));
    await eventually(
      'the sidecar to be ready',
      async () => {
        if (exited) throw new Error(`the sidecar exited: ${stderr}`);
        return (await client('get', 'http://127.0.0.1:15000/ready')).status === 200 ? true : undefined;
      },
      20_000,
      100,
    );
  });

  afterAll(async () => {
    sidecar?.kill('SIGKILL');
    for (const child of children) child.kill('SIGKILL');
    await Promise.all([sidecar, ...children].map((c) => c?.catch(() => undefined)));
    await unload({ mesh: MESH }).catch(() => undefined);
    if (cgroup) await execa('bpftool', ['cgroup', 'detach', cgroup, 'connect4', 'pinned', `${pinDir}/socket-lb`], { reject: false });
    rmSync(pinDir, { recursive: true, force: true });
    for (let i = 0; cgroup && existsSync(cgroup) && i < 50; i++) {
      try {
        rmdirSync(cgroup);
      } catch {
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    await deleteNetns(app);
    for (const ep of eps) await deleteNetns(ep);
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('balances TCP connections and each HTTP request to a ClusterIP over the endpoints', async () => {
    expect(await counts('tcp', CLUSTER_IP, 9090, 20)).toEqual({ ep1: 10, ep2: 10 });
    expect(await counts('http', CLUSTER_IP, 8080, 20)).toEqual({ ep1: 10, ep2: 10 });
  });

  it("resolves a registry service's name with the sidecar's DNS and reaches its mesh VIP", async () => {
    // Any resolver address: DNS is sent to the sidecar on 127.0.0.1:15053.
    expect(await client('dns', '10.96.0.53', 'payments.service.consul', 'A')).toEqual({ answers: [VIP] });
    expect(await counts('tcp', VIP, 9090, 3)).toEqual({ ep1: 3 });
  });

  it("inbound reaches the app through the sidecar's inbound port 15003: the app sees it come from the sidecar (127.0.0.6)", async () => {
    const dial = `require('node:net').connect(${APP_PORT}, '${POD_IP}').on('data', (d) => process.stdout.write(d))`;
    const seen = await execa('ip', ['netns', 'exec', eps[0]!.name, process.execPath, '-e', dial]);
    expect(seen.stdout).toMatch(/^(::ffff:)?127\.0\.0\.6$/);
  });

  it("balances requests to a ClusterIP a socket load balancer attached first sent to one pod over the service's endpoints, counted under the service, and fails over when that pod dies", async () => {
    expect(await counts('http', LB_CLUSTER_IP, 80, 20)).toEqual({ ep1: 10, ep3: 10 });
    const metrics = (await client('get', 'http://127.0.0.1:15010/metrics')).body as string;
    expect(metrics).toMatch(/^flb_sidecar_requests_total\{[^}]*service="web\.shop"[^}]*} 20$/m);
    lbEndpoint.kill('SIGKILL');
    await lbEndpoint.catch(() => undefined);
    // The balancer still sends every connection to the dead pod: none fails.
    expect(await counts('http', LB_CLUSTER_IP, 80, 10)).toEqual({ ep1: 10 });
  });

  it('moves new connections off a killed endpoint: none fails', async () => {
    children[1]!.kill('SIGKILL');
    await children[1]!.catch(() => undefined);
    expect(await counts('tcp', CLUSTER_IP, 9090, 10)).toEqual({ ep1: 10 });
  });
});
