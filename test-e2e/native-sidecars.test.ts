import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { readFileSync } from 'node:fs';
import { VersionApi } from '@kubernetes/client-node';
import { execa } from 'execa';
import { supportsNativeSidecars } from '../common/kube.js';
import { startControlPlane, type ControlPlane } from '../devenv/controlplane.js';
import { testBinary } from '../devenv/cache.js';

// The version scripts/setup.sh stamps into the test servers: the pinned k8s.io/kubernetes module's.
const goMod = readFileSync(new URL('./servers/kube/go.mod', import.meta.url), 'utf8');
const pinned = /^\s*k8s\.io\/kubernetes (v(\d+)\.(\d+)\.\d+)\s*$/m.exec(goMod);
if (!pinned) throw new Error('test-e2e/servers/kube/go.mod does not require k8s.io/kubernetes at a release version');
const [, gitVersion, major, minor] = pinned;

describe('the test control plane reports its real Kubernetes version', () => {
  let plane: ControlPlane;
  beforeAll(async () => {
    plane = await startControlPlane();
  });
  afterAll(async () => {
    await plane?.stop();
  });

  it('on /version: the pinned module version, with its major and minor', async () => {
    const version = await plane.kubeConfig.makeApiClient(VersionApi).getCode();
    expect({ gitVersion: version.gitVersion, major: version.major, minor: version.minor }).toEqual({ gitVersion, major, minor });
  });

  it('so the injector detects native sidecars (Kubernetes 1.29+) on it', async () => {
    expect(Number(major) > 1 || Number(minor) >= 29).toBe(true);
    await expect(supportsNativeSidecars(plane.kubeConfig)).resolves.toBe(true);
  });

  it('and kubectl version parses both sides', async () => {
    const plain = await execa(testBinary('kubectl'), ['version'], { reject: false, env: { KUBECONFIG: plane.kubeconfigPath } });
    expect({ exitCode: plain.exitCode, stderr: plain.stderr }).toEqual({ exitCode: 0, stderr: '' });
    expect(plain.stdout).toContain(`Client Version: ${gitVersion}`);
    expect(plain.stdout).toContain(`Server Version: ${gitVersion}`);

    const json = await execa(testBinary('kubectl'), ['version', '-o', 'json'], { reject: false, env: { KUBECONFIG: plane.kubeconfigPath } });
    expect(json.exitCode).toBe(0);
    const parsed = JSON.parse(json.stdout) as Record<'clientVersion' | 'serverVersion', { gitVersion: string; major: string; minor: string }>;
    expect(parsed.serverVersion).toMatchObject({ gitVersion, major, minor });
    expect(parsed.clientVersion).toMatchObject({ gitVersion, major, minor });
  });
});
