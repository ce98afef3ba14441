// flb-mesh's own control plane on the development environment, each part a process of this
// checkout's `flb` as it would run in a cluster: the repo (TLS, on the pod network's gateway so
// sidecars reach it; writes only with the control plane's client certificate; sidecars by their
// projected tokens, checked by TokenReview), the registry bridge (one or more replicas on a Lease),
// and the injector (its MutatingWebhookConfiguration installed by URL: the apiserver reaches it on
// loopback). Mesh settings live in the ConfigMap the bridge and the injector both read.
import { mkdirSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { CoreV1Api, AdmissionregistrationV1Api } from '@kubernetes/client-node';
import YAML from 'yaml';
import { API_VERSION, type MeshInput } from '../common/contract/index.js';
import { createCertificateAuthority, issueCertificate } from '../common/pki.js';
import type { DevEnvironment } from './environment.js';
import { CHECKOUT } from './node-simulator/images.js';
import { startServer, type ServerProcess } from './processes.js';

export const CONTROL_PLANE_NAMESPACE = 'flomesh';
export const MESH_CONFIGMAP = 'flb-mesh';
const FLB = join(CHECKOUT, 'bin/flb.js');

export interface MeshComponentsOptions {
  /** Bridge replicas (leader election among them). */
  bridges?: number;
  /** Mesh settings beyond what the environment needs (repo URL, namespace). */
  mesh?: Partial<MeshInput>;
  /** FLB_LOG_LEVEL of the components. */
  logLevel?: string;
  /** Bridge sources after the Kubernetes one (a Consul, a Eureka), as the BridgeConfig has them. */
  registrySources?: Record<string, unknown>[];
  /** Bridge sinks after the repo one (a Consul, a Eureka), as the BridgeConfig has them: one bridge reads and writes the registries, as a user runs it. */
  registrySinks?: Record<string, unknown>[];
  onProgress?: (message: string) => void;
}

export interface MeshComponents {
  readonly repoUrl: string;
  readonly repoCaFile: string;
  /** A client certificate the repo takes writes from (tests read and write through it). */
  readonly controlPlaneCert: { certFile: string; keyFile: string };
  readonly injectorUrl: string;
  readonly bridgeAdminUrls: readonly string[];
  readonly dir: string;
  processes(): ServerProcess[];
  /** Starts bridge replica `index` again after it stopped or was killed. */
  startBridge(index: number): Promise<ServerProcess>;
  bridge(index: number): ServerProcess | undefined;
  stop(): Promise<void>;
}

async function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, host, () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

function httpOk(url: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request(url, { timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}

async function until(what: string, process: ServerProcess | undefined, check: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (process && !process.isRunning()) throw new Error(`${process.name} exited before ${what}; last lines of ${process.logFile}:\n${process.logTail()}`);
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}${process ? `; last lines of ${process.logFile}:\n${process.logTail()}` : ''}`);
}

export async function startMeshComponents(env: DevEnvironment, options: MeshComponentsOptions = {}): Promise<MeshComponents> {
  const progress = options.onProgress ?? (() => {});
  const dir = join(env.dir, 'mesh');
  mkdirSync(join(dir, 'logs'), { recursive: true });
  const gateway = env.network.gateway;
  const core = env.plane.kubeConfig.makeApiClient(CoreV1Api);
  const processes: ServerProcess[] = [];
  const bridges: (ServerProcess | undefined)[] = [];
  const childEnv = { ...process.env, FLB_LOG_LEVEL: options.logLevel ?? 'info', FLB_LOG_FORMAT: 'json' };
  const file = (name: string, content: string) => {
    const path = join(dir, name);
    writeFileSync(path, content, { mode: 0o600 });
    return path;
  };
  const stop = async () => {
    for (const p of [...processes].reverse()) await p.stop();
  };

  try {
    progress('making the repo certificates');
    const ca = createCertificateAuthority('flb-devenv-repo-ca');
    const serving = issueCertificate(ca, {
      commonName: 'flb-repo',
      usage: 'server',
      dnsNames: ['localhost', 'flb-repo.flomesh.svc'],
      ipAddresses: [gateway, '127.0.0.1'],
    });
    const controlPlane = issueCertificate(ca, { commonName: 'flb-control-plane', usage: 'client' });
    const caFile = file('repo-ca.pem', ca.certPem);
    const controlPlaneCert = { certFile: file('control-plane.pem', controlPlane.certPem), keyFile: file('control-plane.key', controlPlane.keyPem) };
    const repoPort = await freePort(gateway);
    const repoUrl = `https://${gateway}:${repoPort}`;

    await core.createNamespace({ body: { metadata: { name: CONTROL_PLANE_NAMESPACE } } }).catch((error: unknown) => {
      if ((error as { code?: number }).code !== 409) throw error;
    });
    const mesh: MeshInput = {
      apiVersion: API_VERSION,
      kind: 'Mesh',
      name: 'flb',
      controlPlaneNamespace: CONTROL_PLANE_NAMESPACE,
      ...options.mesh,
      repo: { url: repoUrl, tokenAudience: 'flb-repo', ...options.mesh?.repo },
    };
    const meshYaml = YAML.stringify(mesh);
    await core.createNamespacedConfigMap({ namespace: CONTROL_PLANE_NAMESPACE, body: { metadata: { name: MESH_CONFIGMAP }, data: { 'mesh.yaml': meshYaml } } });

    progress(`starting the repo on ${repoUrl}`);
    const repo = startServer(
      'flb-repo',
      process.execPath,
      [
        FLB,
        'repo',
        '--listen',
        `${gateway}:${repoPort}`,
        '--data-dir',
        join(dir, 'repo-data'),
        '--tls-cert',
        file('repo.pem', serving.certPem),
        '--tls-key',
        file('repo.key', serving.keyPem),
        '--client-ca',
        caFile,
        '--kubeconfig',
        env.plane.kubeconfigPath,
      ],
      join(dir, 'logs', 'repo.log'),
      childEnv,
    );
    processes.push(repo);

    const bridgeConfig = file(
      'bridge.yaml',
      YAML.stringify({
        apiVersion: API_VERSION,
        kind: 'BridgeConfig',
        mesh: { configMap: { namespace: CONTROL_PLANE_NAMESPACE, name: MESH_CONFIGMAP } },
        sources: [{ kind: 'kubernetes' }, ...(options.registrySources ?? [])],
        sinks: [{ kind: 'repo', url: repoUrl, tls: { caFile, ...controlPlaneCert } }, ...(options.registrySinks ?? [])],
        repoCaFile: caFile,
        leaderElection: { namespace: CONTROL_PLANE_NAMESPACE, leaseDurationSeconds: 6, renewDeadlineSeconds: 4, retryPeriodSeconds: 1 },
      }),
    );
    const bridgeAdminPorts = await Promise.all(Array.from({ length: options.bridges ?? 1 }, () => freePort('127.0.0.1')));
    const startBridge = async (index: number) => {
      const bridge = startServer(
        `flb-bridge-${index}`,
        process.execPath,
        [
          FLB,
          'bridge',
          'run',
          '--config',
          bridgeConfig,
          '--kubeconfig',
          env.plane.kubeconfigPath,
          '--admin',
          `127.0.0.1:${bridgeAdminPorts[index]}`,
          '--identity',
          `flb-bridge-${index}`,
        ],
        join(dir, 'logs', `bridge-${index}.log`),
        childEnv,
      );
      processes.push(bridge);
      bridges[index] = bridge;
      await until(`bridge ${index} answering`, bridge, () => httpOk(`http://127.0.0.1:${bridgeAdminPorts[index]}/healthz`));
      return bridge;
    };
    progress('starting the registry bridge');
    for (let i = 0; i < bridgeAdminPorts.length; i++) await startBridge(i);

    progress('starting the sidecar injector');
    const injectorPort = await freePort('127.0.0.1');
    const injector = startServer(
      'flb-injector',
      process.execPath,
      [
        FLB,
        'webhook',
        'serve',
        '--listen',
        `127.0.0.1:${injectorPort}`,
        '--metrics-listen',
        `127.0.0.1:${await freePort('127.0.0.1')}`,
        '--kubeconfig',
        env.plane.kubeconfigPath,
        '--namespace',
        CONTROL_PLANE_NAMESPACE,
        '--mesh-configmap',
        `${CONTROL_PLANE_NAMESPACE}/${MESH_CONFIGMAP}`,
        '--ip',
        '127.0.0.1',
      ],
      join(dir, 'logs', 'injector.log'),
      childEnv,
    );
    processes.push(injector);
    const injectorUrl = `https://127.0.0.1:${injectorPort}/mutate`;
    // The injector makes its CA and certificate first (in a Secret); the configuration takes the CA from there.
    await until('the injector certificate', injector, async () =>
      Boolean(await core.readNamespacedSecret({ name: 'flb-injector-tls', namespace: CONTROL_PLANE_NAMESPACE })),
    );
    const install = startServer(
      'flb-webhook-install',
      process.execPath,
      [FLB, 'webhook', 'install', '--url', injectorUrl, '--kubeconfig', env.plane.kubeconfigPath, '--namespace', CONTROL_PLANE_NAMESPACE],
      join(dir, 'logs', 'webhook-install.log'),
      childEnv,
    );
    const installed = await install.exited;
    if (installed !== 'exit code 0') throw new Error(`flb webhook install failed (${installed}):\n${install.logTail()}`);
    const admission = env.plane.kubeConfig.makeApiClient(AdmissionregistrationV1Api);
    await until('the webhook caBundle', injector, async () => {
      const config = await admission.readMutatingWebhookConfiguration({ name: 'flb-sidecar-injector' });
      return (config.webhooks ?? []).every((w) => Boolean(w.clientConfig.caBundle));
    });
    // Until it has read the mesh settings ConfigMap it answers reviews 503 (and the pod is refused).
    await until('the injector reading the mesh settings', injector, () => readyz(`https://127.0.0.1:${injectorPort}/readyz`));
    await until('the repo answering', repo, () => repoAnswers(repoUrl, { ca: ca.certPem, cert: controlPlane.certPem, key: controlPlane.keyPem }));
    await until('a bridge leading', undefined, async () => {
      for (const port of bridgeAdminPorts) {
        const status = await getJson<{ leader: boolean; sources: { state: string }[] }>(`http://127.0.0.1:${port}/status`);
        if (status?.leader && status.sources.every((s) => s.state === 'synced')) return true;
      }
      return false;
    });

    return {
      repoUrl,
      repoCaFile: caFile,
      controlPlaneCert,
      injectorUrl,
      bridgeAdminUrls: bridgeAdminPorts.map((p) => `http://127.0.0.1:${p}`),
      dir,
      processes: () => [...processes],
      startBridge,
      bridge: (index) => bridges[index],
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** The injector's readiness, as a kubelet probe asks it (no certificate check). */
function readyz(url: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = httpsRequest(url, { rejectUnauthorized: false, timeout: 1000, agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}

/** A GET to the repo as the control plane: 200 once it serves. */
function repoAnswers(url: string, tls: { ca: string; cert: string; key: string }): Promise<boolean> {
  return new Promise((resolve) => {
    const req = httpsRequest(`${url}/api/v1/repo`, { ...tls, timeout: 1000, agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}

export function getJson<T>(url: string): Promise<T | undefined> {
  return new Promise((resolve) => {
    const req = request(url, { timeout: 2000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => {
        try {
          resolve(res.statusCode === 200 ? (JSON.parse(body) as T) : undefined);
        } catch {
          resolve(undefined);
        }
      });
    });
    req.on('error', () => resolve(undefined));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}
