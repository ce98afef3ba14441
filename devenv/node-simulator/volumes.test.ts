import { afterEach, describe, expect, it } from '@jest/globals';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CoreV1Api, V1Pod, V1Volume } from '@kubernetes/client-node';
import { createLogger } from '../../common/log.js';
import { PodVolumes } from './volumes.js';

/** An injected pod's API-backed volumes: Kubernetes' own token and CA, and the repo's. */
const projected = (name: string, audience: string, configMap: string): V1Volume => ({
  name,
  projected: {
    sources: [{ serviceAccountToken: { audience, path: 'token' } }, { configMap: { name: configMap, items: [{ key: 'ca.crt', path: 'ca.crt' }] } }],
  },
});

describe("a pod's volumes", () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });

  /** Every API call answers after `delayMs`; a missing ConfigMap is a 404. */
  const volumesOf = (volumes: V1Volume[], delayMs: number, configMaps: string[]) => {
    const dir = mkdtempSync(join(tmpdir(), 'flb-volumes-test-'));
    dirs.push(dir);
    const later = <T>(value: () => T) =>
      new Promise<T>((resolve, reject) =>
        setTimeout(() => {
          try {
            resolve(value());
          } catch (error) {
            reject(error);
          }
        }, delayMs),
      );
    const core = {
      readNamespacedConfigMap: ({ name }: { name: string }) =>
        later(() => {
          if (!configMaps.includes(name)) throw Object.assign(new Error('not found'), { code: 404 });
          return { data: { 'ca.crt': `ca of ${name}` } };
        }),
      createNamespacedServiceAccountToken: ({ body }: { body: { spec: { audiences: string[] } } }) =>
        later(() => ({ status: { token: `token for ${body.spec.audiences[0]}`, expirationTimestamp: new Date(Date.now() + 3_600_000) } })),
    } as unknown as CoreV1Api;
    const pod: V1Pod = { metadata: { name: 'p', namespace: 'n', uid: 'uid-1' }, spec: { containers: [], volumes } };
    return { volumes: new PodVolumes(pod, dir, core, '10.200.0.1', createLogger('volumes-test', 'silent')), dir };
  };

  it('reads what the volumes need side by side, as the kubelet mounts each volume on its own', async () => {
    const { volumes, dir } = volumesOf(
      [projected('kube-api-access', 'https://kubernetes.default.svc', 'kube-root-ca.crt'), projected('flb-repo-access', 'flb-repo', 'flb-repo-ca')],
      200,
      ['kube-root-ca.crt', 'flb-repo-ca'],
    );
    const started = Date.now();
    await volumes.setUp();
    // Four calls of 200 ms: 800 ms one after the other.
    expect(Date.now() - started).toBeLessThan(600);
    expect(readFileSync(join(dir, 'volumes', 'flb-repo-access', 'token'), 'utf8')).toBe('token for flb-repo');
    expect(readFileSync(join(dir, 'volumes', 'flb-repo-access', 'ca.crt'), 'utf8')).toBe('ca of flb-repo-ca');
    expect(readFileSync(join(dir, 'volumes', 'kube-api-access', 'ca.crt'), 'utf8')).toBe('ca of kube-root-ca.crt');
  });

  it('names the first missing piece in the spec order, as one volume after the other would', async () => {
    const { volumes } = volumesOf([projected('first', 'a', 'missing-first'), projected('second', 'b', 'missing-second')], 10, []);
    await expect(volumes.setUp()).rejects.toThrow('configmap "missing-first" not found');
  });
});
