// The chart's repo on etcd (repo.store: etcd): several replicas behind the one Service, the etcd
// endpoints, client certificate and password from values and Secrets; the disk store stays the
// default. helm template and lint, and the rendered objects through a real apiserver's
// server-side dry run with strict field validation.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { CoreV1Api } from '@kubernetes/client-node';
import { execa } from 'execa';
import YAML from 'yaml';
import { testBinary } from '../devenv/cache.js';
import { startControlPlane } from '../devenv/controlplane.js';
import { CHART_DIR, find, Helm, type KubeObject } from './harness/chart.js';

interface Container {
  args: string[];
  volumeMounts: { name: string; mountPath: string }[];
  readinessProbe: unknown;
}
interface PodSpec {
  containers: Container[];
  volumes: { name: string; secret?: { secretName: string; items?: { key: string; path: string }[] } }[];
}
const podSpec = (o: KubeObject) => (o.spec as { template: { spec: PodSpec } }).template.spec;

const etcdValues = {
  repo: {
    store: 'etcd',
    replicas: 3,
    etcd: {
      endpoints: ['https://etcd-0.etcd:2379', 'https://etcd-1.etcd:2379', 'https://etcd-2.etcd:2379'],
      tlsSecret: 'repo-etcd-client',
      username: 'flb-repo',
      passwordSecret: { name: 'repo-etcd-password', key: 'pw' },
    },
  },
};

describe('the chart: the repo on etcd', () => {
  let helm: Helm;
  beforeAll(() => {
    helm = new Helm();
  });
  afterAll(() => helm?.dispose());

  it('keeps one replica on a volume by default', async () => {
    const objects = await helm.render();
    const statefulSet = find(objects, 'StatefulSet', 'flb-repo');
    expect((statefulSet.spec as { replicas: number }).replicas).toBe(1);
    expect(podSpec(statefulSet).containers[0]!.args).toContain('--data-dir=/var/lib/flb-repo');
    expect(objects.filter((o) => o.kind === 'Deployment' && o.metadata.name === 'flb-repo')).toEqual([]);
  });

  it('runs three replicas behind the one Service with the endpoints, client certificate and password from values and Secrets', async () => {
    const objects = await helm.render(etcdValues);
    expect(objects.filter((o) => o.kind === 'StatefulSet' || o.metadata.name === 'flb-repo-pods')).toEqual([]);
    const deployment = find(objects, 'Deployment', 'flb-repo');
    expect((deployment.spec as { replicas: number }).replicas).toBe(3);
    const service = find(objects, 'Service', 'flb-repo');
    expect((service.spec as { selector: Record<string, string> }).selector).toEqual(
      (deployment.spec as { selector: { matchLabels: Record<string, string> } }).selector.matchLabels,
    );
    const pod = podSpec(deployment);
    const container = pod.containers[0]!;
    expect(container.args).toEqual(
      expect.arrayContaining([
        '--etcd-endpoint=https://etcd-0.etcd:2379,https://etcd-1.etcd:2379,https://etcd-2.etcd:2379',
        '--etcd-prefix=flb-repo/',
        '--etcd-timeout=5s',
        '--etcd-ca=/etc/flb-repo/etcd-tls/ca.crt',
        '--etcd-cert=/etc/flb-repo/etcd-tls/tls.crt',
        '--etcd-key=/etc/flb-repo/etcd-tls/tls.key',
        '--etcd-username=flb-repo',
        '--etcd-password-file=/etc/flb-repo/etcd-password/password',
        '--tls-cert=/etc/flb-repo/tls/tls.crt',
      ]),
    );
    expect(container.args.some((arg) => arg.startsWith('--data-dir'))).toBe(false);
    const volume = (name: string) => pod.volumes.find((v) => v.name === name)!;
    expect(volume('etcd-tls').secret!.secretName).toBe('repo-etcd-client');
    expect(volume('etcd-password').secret).toMatchObject({ secretName: 'repo-etcd-password', items: [{ key: 'pw', path: 'password' }] });
    for (const mount of container.volumeMounts) expect(pod.volumes.map((v) => v.name)).toContain(mount.name);
    // A replica that lost etcd still serves reads: it stays ready (/healthz answers 200 without credentials).
    expect(container.readinessProbe).toMatchObject({ httpGet: { path: '/healthz', port: 'https', scheme: 'HTTPS' } });
    expect(find(objects, 'PodDisruptionBudget', 'flb-repo').spec).toMatchObject({ maxUnavailable: 1 });
    const lint = await helm.run(['lint', '--strict', CHART_DIR, '-f', helm.valuesFile('lint-etcd', etcdValues)]);
    expect(lint).toMatchObject({ exitCode: 0 });
  });

  it('needs neither a client certificate nor a user: without them no Secret is mounted', async () => {
    const objects = await helm.render({ repo: { store: 'etcd', etcd: { endpoints: ['http://etcd:2379'] } } });
    const pod = podSpec(find(objects, 'Deployment', 'flb-repo'));
    expect(pod.volumes.map((v) => v.name)).toEqual(['tls']);
    expect(pod.containers[0]!.args.filter((arg) => arg.startsWith('--etcd-'))).toEqual([
      '--etcd-endpoint=http://etcd:2379',
      '--etcd-prefix=flb-repo/',
      '--etcd-timeout=5s',
    ]);
    expect(objects.filter((o) => o.kind === 'PodDisruptionBudget' && o.metadata.name === 'flb-repo')).toEqual([]);
  });

  it('names the value that is wrong', async () => {
    const refused = async (values: unknown) => {
      const result = await helm.run(['template', 'flb', CHART_DIR, '-n', 'flomesh', '-f', helm.valuesFile('bad', values)]);
      expect(result.exitCode).not.toBe(0);
      return result.stderr;
    };
    expect(await refused({ repo: { store: 'etcd' } })).toContain('repo.etcd.endpoints: repo.store is etcd, so name the etcd members');
    expect(await refused({ repo: { replicas: 3 } })).toContain('repo.replicas: 3 replicas need repo.store etcd');
    expect(await refused({ repo: { store: 'etcd', etcd: { endpoints: ['https://e:2379'], username: 'u' } } })).toContain(
      'repo.etcd.passwordSecret.name: repo.etcd.username needs the Secret holding its password',
    );
    expect(await refused({ repo: { store: 'etcd', etcd: { endpoints: ['etcd:2379'] } } })).toContain(
      "at '/repo/etcd/endpoints/0': 'etcd:2379' does not match pattern",
    );
    expect(await refused({ repo: { store: 'consul' } })).toContain("at '/repo/store'");
    // The values file documents every key the schema knows.
    expect(YAML.parse(await helm.run(['show', 'values', CHART_DIR]).then((r) => r.stdout)).repo).toMatchObject({
      store: 'disk',
      replicas: 1,
      etcd: { endpoints: [], prefix: 'flb-repo/', timeout: '5s', tlsSecret: '', username: '', passwordSecret: { name: '', key: 'password' } },
    });
  });
});

describe('the chart: the repo on etcd, through a real apiserver', () => {
  it('has every object accepted by a server-side dry run with strict field validation', async () => {
    const plane = await startControlPlane();
    const helm = new Helm(plane.kubeconfigPath);
    try {
      await plane.kubeConfig.makeApiClient(CoreV1Api).createNamespace({ body: { metadata: { name: 'flomesh' } } });
      const text = await helm.renderText(etcdValues);
      const count = YAML.parseAllDocuments(text).filter((d) => d.toJS() !== null).length;
      const applied = await execa(
        testBinary('kubectl'),
        ['--kubeconfig', plane.kubeconfigPath, 'apply', '--server-side', '--dry-run=server', '--validate=strict', '--field-manager=flb-chart-test', '-f', '-'],
        { reject: false, input: text },
      );
      expect({ exitCode: applied.exitCode, stderr: applied.stderr }).toEqual({ exitCode: 0, stderr: '' });
      expect(
        String(applied.stdout)
          .split('\n')
          .filter((l) => l.endsWith('serverside-applied (server dry run)')),
      ).toHaveLength(count);
    } finally {
      helm.dispose();
      await plane.stop();
    }
  }, 120_000);
});
