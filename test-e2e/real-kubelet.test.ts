import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { cacheDir, testBinary } from '../devenv/cache.js';
import { buildImages } from '../devenv/images/builder.js';
import { startServer, type ServerProcess } from '../devenv/processes.js';
import { eventually } from './harness/eventually.js';

// A real kubelet with Debian's containerd and runc, as node rk-node of the dev control plane with
// flb-mesh's repo, bridge and injector (devenv/real-kubelet/run.sh starts and stops it all, and
// removes what a killed run left), running devenv/real-kubelet/demo.yaml: the scenario the node
// simulator runs, under the kubelet users run.
const repoRoot = new URL('..', import.meta.url).pathname;
const runScript = join(repoRoot, 'devenv/real-kubelet/run.sh');
const demo = join(repoRoot, 'devenv/real-kubelet/demo.yaml');
const kubelet = join(cacheDir(), 'bin/kubelet');
const work = '/tmp/flb-real-kubelet';
const runDir = '/run/flb-real-kubelet';

/** What this test needs and the machine lacks, each with how to get it. */
function missingPrerequisites(): string[] {
  const missing: string[] = [];
  if (process.getuid?.() !== 0) missing.push('root (containerd, runc and the pod bridge need it)');
  for (const [tool, how] of [
    ['containerd', 'apt-get install containerd (scripts/setup.sh installs it)'],
    ['ctr', 'apt-get install containerd'],
    ['runc', 'apt-get install runc'],
    ['buildah', 'apt-get install buildah'],
    ['mmdebstrap', 'apt-get install mmdebstrap'],
    ['gcc', 'apt-get install gcc libc6-dev'],
    ['setpriv', 'apt-get install util-linux'],
  ] as const) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      missing.push(`${tool}: ${how}`);
    }
  }
  if (!existsSync('/usr/lib/cni/bridge')) missing.push('the bridge CNI plugin: apt-get install containernetworking-plugins');
  if (!existsSync(kubelet)) missing.push(`${kubelet}: scripts/setup.sh builds it`);
  if (!existsSync(join(repoRoot, 'dist/devenv/controlplane.js'))) missing.push('dist/: npm run build');
  return missing;
}

interface PodStatus {
  spec: { initContainers?: { name: string; restartPolicy?: string }[]; containers: { name: string }[] };
  status: {
    podIP?: string;
    conditions?: { type: string; status: string }[];
    initContainerStatuses?: { name: string; ready: boolean }[];
    containerStatuses?: { name: string; ready: boolean }[];
  };
}

interface ClientStats {
  url: string;
  sent: number;
  ok: number;
  failed: number;
  lastError?: string;
  byPod: Record<string, number>;
}

describe('a real kubelet (containerd, runc) runs plain and injected pods', () => {
  let node: ServerProcess | undefined;
  let kubeconfig = '';
  const kubectl = async (...args: string[]) => (await execa(testBinary('kubectl'), args, { env: { KUBECONFIG: kubeconfig }, timeout: 120_000 })).stdout;
  const pod = async (name: string) => JSON.parse(await kubectl('get', 'pod', name, '-o', 'json')) as PodStatus;

  beforeAll(async () => {
    const missing = missingPrerequisites();
    if (missing.length > 0) throw new Error(`the real-kubelet test cannot run here; it needs:\n  ${missing.join('\n  ')}`);
    // run.sh imports the images from the builder's store: made here when this file runs before
    // images.test.ts (cached by their inputs, so a warm run only checks them).
    await buildImages({ onProgress: (message) => process.stderr.write(`images: ${message}\n`) });
    // Beside the kubelet's and containerd's logs, replaced by the next run like them.
    mkdirSync(work, { recursive: true });
    rmSync(`${work}/run.log`, { force: true });
    node = startServer('real-kubelet', runScript, [], `${work}/run.log`);
    const started = node;
    const ready = await eventually(
      'the node to be Ready',
      async () => (started.isRunning() ? /^KUBECONFIG=(.+)$/m.exec(readFileSync(started.logFile, 'utf8'))?.[1] : null),
      240_000,
      500,
    ).catch((error: unknown) => {
      throw new Error(`${String(error)}\n${started.logTail(40)}\n(kubelet log: ${work}/kubelet.log)`);
    });
    if (ready === null) throw new Error(`run.sh stopped (${await started.exited}):\n${started.logTail(40)}\n(kubelet log: ${work}/kubelet.log)`);
    kubeconfig = ready;
    // The echo pod first: the client's calls start as soon as its sidecar is configured, and a
    // call made before echo is Ready fails as it would in any mesh (seen in CI: the client's app
    // ran 0.1 s before echo's first successful probe). The claim checked below is that once echo
    // serves, every call reaches it.
    await kubectl('apply', '-f', demo, '-l', 'app=echo');
    await kubectl('wait', '--for=condition=Ready', 'pod/echo', '--timeout=90s');
    await kubectl('apply', '-f', demo, '-l', 'app=client');
    await kubectl('wait', '--for=condition=Ready', 'pod/client', '--timeout=90s');
  }, 720_000);

  afterAll(async () => {
    // SIGTERM: run.sh deletes the pods through the kubelet, then removes everything it made.
    await node?.stop(120_000);
  }, 150_000);

  it('the injector gave the client flb-sidecar as a native sidecar, then flb-init, and every container is Ready', async () => {
    const client = await pod('client');
    expect(client.spec.initContainers?.map((c) => ({ name: c.name, restartPolicy: c.restartPolicy }))).toEqual([
      { name: 'flb-sidecar', restartPolicy: 'Always' },
      { name: 'flb-init', restartPolicy: undefined },
    ]);
    expect(client.status.initContainerStatuses?.find((c) => c.name === 'flb-sidecar')?.ready).toBe(true);
    expect(client.status.containerStatuses?.map((c) => [c.name, c.ready])).toEqual([['client', true]]);
    const echo = await pod('echo');
    expect(echo.spec.initContainers).toBeUndefined();
    expect(echo.status.containerStatuses?.map((c) => [c.name, c.ready])).toEqual([['echo', true]]);
  });

  it("the client's calls to the echo Service reach the echo pod through its sidecar", async () => {
    const ip = (await pod('client')).status.podIP;
    const stats = await eventually(
      'ten calls answered by the echo pod',
      async () => {
        const response = await fetch(`http://${ip}:8081/stats`);
        const s = (await response.json()) as ClientStats;
        return (s.byPod.echo ?? 0) >= 10 ? s : undefined;
      },
      30_000,
      500,
    );
    expect(stats.url).toBe('http://echo.default.svc.cluster.local:8080/');
    expect(Object.keys(stats.byPod)).toEqual(['echo']);
    expect({ failed: stats.failed, lastError: stats.lastError }).toEqual({ failed: 0, lastError: undefined });
  });

  it('stops leaving no process, mount, bridge or pod state behind', async () => {
    await node?.stop(120_000);
    const processes = readdirSync('/proc')
      .filter((p) => /^\d+$/.test(p))
      .flatMap((p) => {
        try {
          const cmdline = readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').join(' ');
          return cmdline.includes(runDir) || cmdline.includes(`${work}/`) ? [cmdline.slice(0, 120)] : [];
        } catch {
          return [];
        }
      });
    const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .filter((line) => line.includes(` ${work}/`) || line.includes(` ${runDir}/`));
    const bridge = await execa('ip', ['link', 'show', 'rk0'], { reject: false });
    expect({ processes, mounts, bridgeExists: bridge.exitCode === 0, kubeletState: existsSync(`${work}/kubelet`) }).toEqual({
      processes: [],
      mounts: [],
      bridgeExists: false,
      kubeletState: false,
    });
  }, 150_000);
});
