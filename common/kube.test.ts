import { afterAll, describe, expect, it } from '@jest/globals';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ActionableError } from './errors.js';
import { SERVICE_ACCOUNT_DIR, loadKubeConfig } from './kube.js';

const dir = mkdtempSync(join(tmpdir(), 'flb-kube-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function kubeconfig(name: string, server: string, extra = ''): string {
  const file = join(dir, name);
  writeFileSync(
    file,
    `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: '${server}'${extra}}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`,
  );
  return file;
}

/** The error's message and hint, as `flb` prints them. */
function failure(load: () => unknown): string {
  try {
    load();
  } catch (error) {
    expect(error).toBeInstanceOf(ActionableError);
    return `${(error as ActionableError).message}\nhint: ${(error as ActionableError).hint}`;
  }
  throw new Error('expected an error');
}

describe('loadKubeConfig', () => {
  const emptyHome = join(dir, 'home');
  mkdirSync(emptyHome);

  it('with nothing configured, names every place it looked and what to do (was: a localhost:8080 fallback refused later as plain HTTP)', () => {
    const text = failure(() => loadKubeConfig(undefined, { env: {}, home: emptyHome, root: dir }));
    expect(text).toContain('no Kubernetes API configured: no --kubeconfig, KUBECONFIG is not set');
    expect(text).toContain(`${emptyHome}/.kube/config does not exist`);
    expect(text).toContain(`this is not a pod (no ${dir}${SERVICE_ACCOUNT_DIR}/token)`);
    expect(text).toContain('hint: pass --kubeconfig FILE or set KUBECONFIG=FILE');
    expect(text).not.toMatch(/HTTP protocol|ENOENT/);
  });

  it('a --kubeconfig that does not exist is named, not a bare ENOENT', () => {
    const text = failure(() => loadKubeConfig(join(dir, 'nope.yaml')));
    expect(text).toContain(`the kubeconfig ${dir}/nope.yaml (--kubeconfig) does not exist`);
    expect(text).not.toContain('ENOENT');
  });

  it('KUBECONFIG naming only missing files says so; missing ones beside a real one are skipped, as kubectl does', () => {
    const missing = join(dir, 'missing.yaml');
    expect(failure(() => loadKubeConfig(undefined, { env: { KUBECONFIG: missing }, home: emptyHome }))).toContain(
      `KUBECONFIG=${missing}: the file does not exist`,
    );
    const real = kubeconfig('real.yaml', 'https://127.0.0.1:6443');
    const kc = loadKubeConfig(undefined, { env: { KUBECONFIG: `${missing}:${real}` }, home: emptyHome });
    expect(kc.getCurrentCluster()?.server).toBe('https://127.0.0.1:6443');
  });

  it('falls back to ~/.kube/config, then the ServiceAccount inside a pod', () => {
    const home = join(dir, 'user');
    mkdirSync(join(home, '.kube'), { recursive: true });
    kubeconfig('user/.kube/config', 'https://10.0.0.1:6443');
    expect(loadKubeConfig(undefined, { env: {}, home }).getCurrentCluster()?.server).toBe('https://10.0.0.1:6443');

    const root = join(dir, 'pod');
    mkdirSync(`${root}${SERVICE_ACCOUNT_DIR}`, { recursive: true });
    writeFileSync(`${root}${SERVICE_ACCOUNT_DIR}/token`, 'token');
    writeFileSync(`${root}${SERVICE_ACCOUNT_DIR}/ca.crt`, '');
    const inPod = loadKubeConfig(undefined, { env: { KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' }, home: emptyHome, root });
    expect(inPod.getCurrentCluster()?.server).toBe('https://10.96.0.1:443');
    expect(failure(() => loadKubeConfig(undefined, { env: {}, home: emptyHome, root }))).toContain(
      'KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set',
    );
  });

  it('a plain-HTTP server is refused at once, saying how to allow it', () => {
    const file = kubeconfig('proxy.yaml', 'http://127.0.0.1:8001');
    const text = failure(() => loadKubeConfig(file));
    expect(text).toContain(`the kubeconfig ${file} (--kubeconfig) points at http://127.0.0.1:8001, plain HTTP`);
    expect(text).toContain("add insecure-skip-tls-verify: true to the cluster 'c'");
    expect(loadKubeConfig(kubeconfig('proxy-ok.yaml', 'http://127.0.0.1:8001', ', insecure-skip-tls-verify: true')).getCurrentCluster()?.server).toBe(
      'http://127.0.0.1:8001',
    );
  });

  it('a file that is not a kubeconfig is named', () => {
    const file = join(dir, 'garbage.yaml');
    writeFileSync(file, 'clusters: [');
    expect(failure(() => loadKubeConfig(file))).toContain(`the kubeconfig ${file} (--kubeconfig) cannot be read:`);
  });
});
