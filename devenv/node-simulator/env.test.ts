import { describe, expect, it } from '@jest/globals';
import type { V1Container, V1Pod } from '@kubernetes/client-node';
import { containerEnv, EnvError, expandReferences, homeDirectory, type EnvSources } from './env.js';

const pod: V1Pod = {
  metadata: { name: 'orders-1', namespace: 'shop', uid: 'u-1', labels: { app: 'orders' }, annotations: { 'team/owner': 'blue' } },
  spec: { nodeName: 'node-a', serviceAccountName: 'orders', containers: [{ name: 'app', resources: { limits: { cpu: '500m', memory: '128Mi' } } }] },
  status: { podIP: '10.200.1.7', podIPs: [{ ip: '10.200.1.7' }] },
};

const sources = (configMaps: Record<string, Record<string, string>> = {}, secrets: Record<string, Record<string, string>> = {}): EnvSources => ({
  configMap: (name) => configMaps[name],
  secret: (name) => secrets[name],
  apiserver: { host: '10.200.0.1', port: 40123 },
  nodeIp: '10.200.0.1',
  allocatable: { cpu: '2', memory: '8Gi' },
});

describe('container environment', () => {
  it('gives every container the apiserver address and its hostname', () => {
    const env = containerEnv(pod, { name: 'app' }, sources());
    expect(env).toMatchObject({ KUBERNETES_SERVICE_HOST: '10.200.0.1', KUBERNETES_SERVICE_PORT: '40123', HOSTNAME: 'orders-1' });
    expect(env.PATH).toContain('/usr/bin');
  });

  it('resolves the downward API fields the injector uses', () => {
    const field = (name: string, fieldPath: string) => ({ name, valueFrom: { fieldRef: { fieldPath } } });
    const container: V1Container = {
      name: 'app',
      env: [
        field('POD_NAME', 'metadata.name'),
        field('POD_NAMESPACE', 'metadata.namespace'),
        field('POD_UID', 'metadata.uid'),
        field('POD_IP', 'status.podIP'),
        field('POD_IPS', 'status.podIPs'),
        field('SA', 'spec.serviceAccountName'),
        field('NODE', 'spec.nodeName'),
        field('HOST_IP', 'status.hostIP'),
        field('APP', "metadata.labels['app']"),
        field('OWNER', "metadata.annotations['team/owner']"),
        { name: 'CPU', valueFrom: { resourceFieldRef: { resource: 'limits.cpu', divisor: '1m' } } },
        { name: 'MEM', valueFrom: { resourceFieldRef: { resource: 'limits.memory', divisor: '1Mi' } } },
      ],
    };
    expect(containerEnv(pod, { ...pod.spec!.containers[0]!, ...container }, sources())).toMatchObject({
      POD_NAME: 'orders-1',
      POD_NAMESPACE: 'shop',
      POD_UID: 'u-1',
      POD_IP: '10.200.1.7',
      POD_IPS: '10.200.1.7',
      SA: 'orders',
      NODE: 'node-a',
      HOST_IP: '10.200.0.1',
      APP: 'orders',
      OWNER: 'blue',
      CPU: '500',
      MEM: '128',
    });
  });

  it('expands $(VAR) from variables defined before, and keeps $$ and unknown references literal', () => {
    expect(
      expandReferences(
        '$(A)-$(B)-$$(A)-$(NOPE)',
        new Map([
          ['A', 'x'],
          ['B', 'y'],
        ]),
      ),
    ).toBe('x-y-$(A)-$(NOPE)');
    const env = containerEnv(
      pod,
      {
        name: 'app',
        env: [
          { name: 'A', value: 'one' },
          { name: 'B', value: '$(A)-two' },
          { name: 'C', value: '$(D)' },
          { name: 'D', value: 'late' },
        ],
      },
      sources(),
    );
    expect(env).toMatchObject({ B: 'one-two', C: '$(D)' });
  });

  it('reads ConfigMap and Secret keys and envFrom with a prefix; a later env entry wins', () => {
    const env = containerEnv(
      pod,
      {
        name: 'app',
        envFrom: [{ configMapRef: { name: 'settings' }, prefix: 'S_' }, { secretRef: { name: 'creds' } }],
        env: [
          { name: 'LEVEL', valueFrom: { configMapKeyRef: { name: 'settings', key: 'level' } } },
          { name: 'S_level', value: 'overridden' },
          { name: 'MAYBE', valueFrom: { configMapKeyRef: { name: 'absent', key: 'x', optional: true } } },
        ],
      },
      sources({ settings: { level: 'debug' } }, { creds: { TOKEN: 's3cret' } }),
    );
    expect(env).toMatchObject({ LEVEL: 'debug', S_level: 'overridden', TOKEN: 's3cret' });
    expect(env).not.toHaveProperty('MAYBE');
  });

  it('refuses a missing ConfigMap, key or Secret the kubelet would refuse, naming it', () => {
    expect(() => containerEnv(pod, { name: 'app', env: [{ name: 'X', valueFrom: { configMapKeyRef: { name: 'nope', key: 'x' } } }] }, sources())).toThrow(
      new EnvError('configmap "nope" not found'),
    );
    expect(() =>
      containerEnv(pod, { name: 'app', env: [{ name: 'X', valueFrom: { configMapKeyRef: { name: 'cm', key: 'x' } } }] }, sources({ cm: {} })),
    ).toThrow(/couldn't find key x in ConfigMap cm/);
    expect(() => containerEnv(pod, { name: 'app', envFrom: [{ secretRef: { name: 'gone' } }] }, sources())).toThrow(/secret "gone" not found/);
  });
});

describe('HOME, as the runtime sets it when the spec does not', () => {
  const passwd = 'root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\nnohome:x:700:700::::\n';
  it("is the user's home from the passwd file", () => {
    expect(homeDirectory(0, passwd)).toBe('/root');
    expect(homeDirectory(65534, passwd)).toBe('/nonexistent');
  });
  it('is / for a UID with no entry, or an entry without a home', () => {
    expect(homeDirectory(65532, passwd)).toBe('/');
    expect(homeDirectory(700, passwd)).toBe('/');
    expect(homeDirectory(0, '')).toBe('/');
  });
});
