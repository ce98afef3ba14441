import { mkdtempSync, rmSync, writeFileSync, appendFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request as httpRequest } from 'node:http';
import { Agent, request as httpsRequest } from 'node:https';
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import YAML from 'yaml';
import { createCertificateAuthority, generateRsaKeyPem, issueCertificate, type KeyPair } from '../common/pki.js';
import { testBinary } from './cache.js';
import { startReaper, startServer, type ServerProcess } from './processes.js';

/**
 * A real Kubernetes control plane for the demo and the tests: etcd, kube-apiserver and
 * kube-controller-manager on loopback ports, with fresh certificates and service-account keys.
 * No kubelet, scheduler or kube-proxy: pods are stored, not run, unless the node simulator
 * (node-simulator/) runs them; webhooks must be reached by `url:`.
 */
export interface ControlPlane {
  /** Base URL of the API server, https://127.0.0.1:PORT */
  readonly server: string;
  /** A kubeconfig file with cluster-admin (system:masters) credentials, for kubectl and tools. */
  readonly kubeconfigPath: string;
  readonly kubeConfig: KubeConfig;
  readonly ca: KeyPair;
  /** The temporary folder holding certificates, data and logs; removed by stop(). */
  readonly dir: string;
  readonly etcdUrl: string;
  readonly processes: readonly ServerProcess[];
  /** The issuer and audience of the cluster's ServiceAccount tokens. */
  readonly serviceAccountIssuer: string;
  stop(): Promise<void>;
}

export interface ControlPlaneOptions {
  /** Extra kube-apiserver flags, e.g. `--feature-gates=...`. */
  apiserverArgs?: string[];
  /** How long to wait for each component to become ready. */
  readyTimeoutMs?: number;
  /** Progress lines (e.g. console.error for the demo). */
  onProgress?: (message: string) => void;
  /** More addresses the apiserver's certificate names (the pod network's gateway, which relays to it). */
  extraServingAddresses?: string[];
}

export async function startControlPlane(options: ControlPlaneOptions = {}): Promise<ControlPlane> {
  const progress = options.onProgress ?? (() => {});
  const readyTimeoutMs = options.readyTimeoutMs ?? 90_000;
  const binaries = {
    etcd: testBinary('etcd'),
    apiserver: testBinary('kube-apiserver'),
    controllerManager: testBinary('kube-controller-manager'),
  };
  const dir = mkdtempSync(join(tmpdir(), 'flb-controlplane-'));
  const reaper = startReaper(dir);
  const processes: ServerProcess[] = [];
  const remember = (p: ServerProcess) => {
    processes.push(p);
    appendFileSync(join(dir, 'pids'), `${p.pid}\n`);
    return p;
  };
  const stop = async () => {
    for (const p of [...processes].reverse()) await p.stop();
    rmSync(dir, { recursive: true, force: true });
    await reaper.dismiss();
  };

  try {
    const [etcdClientPort, etcdPeerPort, apiserverPort, controllerManagerPort] = await freePorts(4);
    const file = (name: string, content: string) => {
      const path = join(dir, name);
      writeFileSync(path, content, { mode: 0o600 });
      return path;
    };

    progress('generating certificates and service-account keys');
    const ca = createCertificateAuthority('flb-test-kubernetes-ca');
    const serving = issueCertificate(ca, {
      commonName: 'kube-apiserver',
      usage: 'server',
      dnsNames: ['localhost', 'kubernetes', 'kubernetes.default', 'kubernetes.default.svc', 'kubernetes.default.svc.cluster.local'],
      ipAddresses: ['127.0.0.1', '10.96.0.1', ...(options.extraServingAddresses ?? [])],
    });
    const admin = issueCertificate(ca, { commonName: 'flb-test-admin', organizations: ['system:masters'], usage: 'client' });
    const controllerManagerCert = issueCertificate(ca, { commonName: 'system:kube-controller-manager', usage: 'client' });
    const serviceAccountKey = generateRsaKeyPem();
    const serviceAccountIssuer = 'https://kubernetes.default.svc.cluster.local';
    const paths = {
      caCert: file('ca.crt', ca.certPem),
      caKey: file('ca.key', ca.keyPem),
      servingCert: file('apiserver.crt', serving.certPem),
      servingKey: file('apiserver.key', serving.keyPem),
      saKey: file('sa.key', serviceAccountKey.privateKeyPem),
      saPub: file('sa.pub', serviceAccountKey.publicKeyPem),
    };
    const server = `https://127.0.0.1:${apiserverPort}`;
    const kubeconfigPath = file('admin.kubeconfig', kubeconfigYaml(server, ca.certPem, admin, 'flb-test-admin'));
    const controllerManagerKubeconfig = file(
      'controller-manager.kubeconfig',
      kubeconfigYaml(server, ca.certPem, controllerManagerCert, 'system:kube-controller-manager'),
    );

    progress('starting etcd');
    const etcdUrl = `http://127.0.0.1:${etcdClientPort}`;
    const etcd = remember(
      startServer(
        'etcd',
        binaries.etcd,
        [
          '--name=flb-test',
          `--data-dir=${join(dir, 'etcd')}`,
          `--listen-client-urls=${etcdUrl}`,
          `--advertise-client-urls=${etcdUrl}`,
          `--listen-peer-urls=http://127.0.0.1:${etcdPeerPort}`,
          `--initial-advertise-peer-urls=http://127.0.0.1:${etcdPeerPort}`,
          `--initial-cluster=flb-test=http://127.0.0.1:${etcdPeerPort}`,
          // Test data is thrown away, so fsync buys nothing but slower tests.
          '--unsafe-no-fsync',
          '--log-level=warn',
        ],
        join(dir, 'etcd.log'),
      ),
    );
    await waitFor(etcd, readyTimeoutMs, async () => (await httpGet(`${etcdUrl}/health`)).status === 200);

    progress('starting kube-apiserver');
    const apiserver = remember(
      startServer(
        'kube-apiserver',
        binaries.apiserver,
        [
          `--etcd-servers=${etcdUrl}`,
          '--bind-address=127.0.0.1',
          '--advertise-address=127.0.0.1',
          `--secure-port=${apiserverPort}`,
          `--tls-cert-file=${paths.servingCert}`,
          `--tls-private-key-file=${paths.servingKey}`,
          `--client-ca-file=${paths.caCert}`,
          `--service-account-key-file=${paths.saPub}`,
          `--service-account-signing-key-file=${paths.saKey}`,
          `--service-account-issuer=${serviceAccountIssuer}`,
          '--service-cluster-ip-range=10.96.0.0/16',
          '--authorization-mode=Node,RBAC',
          '--allow-privileged=true',
          // The `kubernetes` Service cannot point at a loopback address; nothing here needs it.
          '--endpoint-reconciler-type=none',
          '--profiling=false',
          '--v=1',
          ...(options.apiserverArgs ?? []),
        ],
        join(dir, 'kube-apiserver.log'),
      ),
    );
    const adminAgent = new Agent({ ca: ca.certPem, cert: admin.certPem, key: admin.keyPem });
    await waitFor(apiserver, readyTimeoutMs, async () => (await httpGet(`${server}/readyz`, adminAgent)).status === 200);

    progress('starting kube-controller-manager');
    const controllerManager = remember(
      startServer(
        'kube-controller-manager',
        binaries.controllerManager,
        [
          `--kubeconfig=${controllerManagerKubeconfig}`,
          `--authentication-kubeconfig=${controllerManagerKubeconfig}`,
          `--authorization-kubeconfig=${controllerManagerKubeconfig}`,
          '--bind-address=127.0.0.1',
          `--secure-port=${controllerManagerPort}`,
          '--leader-elect=false',
          '--use-service-account-credentials=true',
          `--service-account-private-key-file=${paths.saKey}`,
          `--root-ca-file=${paths.caCert}`,
          `--cluster-signing-cert-file=${paths.caCert}`,
          `--cluster-signing-key-file=${paths.caKey}`,
          '--v=1',
        ],
        join(dir, 'kube-controller-manager.log'),
      ),
    );
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromFile(kubeconfigPath);
    const core = kubeConfig.makeApiClient(CoreV1Api);
    // The `default` ServiceAccount is made by the controller manager; pods are rejected without it.
    await waitFor(controllerManager, readyTimeoutMs, async () => {
      await core.readNamespacedServiceAccount({ name: 'default', namespace: 'default' });
      return true;
    });
    adminAgent.destroy();
    progress(`control plane ready at ${server}`);

    return { server, kubeconfigPath, kubeConfig, ca, dir, etcdUrl, processes, serviceAccountIssuer, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

function kubeconfigYaml(server: string, caPem: string, client: KeyPair, user: string): string {
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  return YAML.stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'flb-test', cluster: { server, 'certificate-authority-data': b64(caPem) } }],
    users: [{ name: user, user: { 'client-certificate-data': b64(client.certPem), 'client-key-data': b64(client.keyPem) } }],
    contexts: [{ name: 'flb-test', context: { cluster: 'flb-test', user } }],
    'current-context': 'flb-test',
  });
}

/** Polls `ready` until it returns true; fails early, with the log's tail, if the process exits. */
async function waitFor(process: ServerProcess, timeoutMs: number, ready: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError = 'not ready';
  let exitedWith: string | undefined;
  void process.exited.then((how) => (exitedWith = how));
  while (Date.now() < deadline) {
    if (exitedWith !== undefined) {
      throw new Error(`${process.name} exited (${exitedWith}) before it was ready; last lines of ${process.logFile}:\n${process.logTail()}`);
    }
    try {
      if (await ready()) return;
    } catch (error) {
      lastError = error instanceof Error ? error.message : String(error);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${process.name} was not ready within ${timeoutMs} ms (${lastError}); last lines of its log:\n${process.logTail()}`);
}

function httpGet(url: string, agent?: Agent): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = url.startsWith('https:') ? httpsRequest(url, { agent, timeout: 2000 }) : httpRequest(url, { timeout: 2000 });
    req.on('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`timeout fetching ${url}`)));
    req.on('error', reject);
    req.end();
  });
}

/** Ports free right now on 127.0.0.1, all held open together so that no two are the same. */
export async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<Server>((resolve, reject) => {
          const s = createServer();
          s.once('error', reject);
          s.listen(0, '127.0.0.1', () => resolve(s));
        }),
    ),
  );
  const ports = servers.map((s) => {
    const address = s.address();
    if (address === null || typeof address === 'string') throw new Error('no port');
    return address.port;
  });
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}
