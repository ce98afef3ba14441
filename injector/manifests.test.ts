import { describe, expect, it } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';

const flb = fileURLToPath(new URL('../bin/flb.js', import.meta.url));
const workloads = fileURLToPath(new URL('./testdata/manifests/workloads.yaml', import.meta.url));
const run = (args: string[], input?: string) => {
  const r = spawnSync(process.execPath, [flb, 'inject', ...args], {
    encoding: 'utf8',
    ...(input !== undefined ? { input } : {}),
    env: { ...process.env, FLB_LOG_LEVEL: 'silent' },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
};
type Doc = { kind: string; metadata: { name: string }; items?: Doc[]; spec: Record<string, unknown> };
const template = (doc: Doc) =>
  doc.kind === 'CronJob'
    ? (doc.spec as { jobTemplate: { spec: { template: { spec: { initContainers?: { name: string }[] } } } } }).jobTemplate.spec.template
    : (doc.spec as { template: { spec: { initContainers?: { name: string }[] }; metadata?: { namespace?: string } } }).template;
const sidecars = (doc: Doc) => (template(doc).spec.initContainers ?? []).map((c) => c.name);

describe('flb inject', () => {
  it('injects every workload kind in a multi-document file and passes other objects through', () => {
    const { code, stdout, stderr } = run(['-f', workloads]);
    expect(stderr).toBe('');
    expect(code).toBe(0);
    const docs = YAML.parseAllDocuments(stdout).map((d) => d.toJS() as Doc);
    expect(docs.map((d) => d.kind)).toEqual(['Deployment', 'StatefulSet', 'CronJob', 'List', 'Service']);
    const [deployment, statefulSet, cronJob, list, service] = docs as [Doc, Doc, Doc, Doc, Doc];
    expect(sidecars(deployment)).toEqual(['flb-init', 'flb-sidecar']);
    expect((template(deployment) as { metadata?: { namespace?: string } }).metadata?.namespace).toBeUndefined();
    expect(sidecars(statefulSet)).toEqual([]);
    expect(sidecars(cronJob)).toEqual(['flb-init', 'flb-sidecar']);
    expect(sidecars(list.items![0]!)).toEqual([]);
    expect(sidecars(list.items![1]!)).toEqual(['flb-init', 'flb-sidecar']);
    expect(service).toEqual({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'orders', namespace: 'shop' },
      spec: { ports: [{ port: 80, targetPort: 8080 }] },
    });
  });

  it('is idempotent: injecting its own output changes nothing', () => {
    const once = run(['-f', workloads]).stdout;
    expect(run(['-f', '-'], once).stdout).toBe(once);
  });

  it('--explain says why each workload would or would not be injected', () => {
    const { code, stdout } = run(['-f', workloads, '--explain']);
    expect(code).toBe(0);
    expect(stdout.trim().split('\n')).toEqual([
      'Deployment shop/orders: inject (namespace label flomesh.io/inject=enabled)',
      'StatefulSet shop/db: skip, pod-label-disabled (the pod is labelled flomesh.io/inject=false)',
      'CronJob shop/report: inject (namespace label flomesh.io/inject=enabled)',
      "DaemonSet shop/agent: skip, host-network (the pod uses the host network; a sidecar would capture the node's traffic)",
      'Job shop/migrate: inject (namespace label flomesh.io/inject=enabled)',
      'Service shop/orders: ignored (Service has no pod template)',
    ]);
  });

  it('follows the namespace labels it is told, as the webhook would', () => {
    const { stdout } = run(['-f', workloads, '--explain', '--namespace-label', 'team=shop']);
    expect(stdout).toContain('Deployment shop/orders: skip, namespace-not-enabled');
  });

  it('exits 1 naming the workload when the injector would refuse it', () => {
    const pod =
      'apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop, annotations: {flomesh.io/inbound-port-exclusion-list: "http"}}\nspec: {containers: [{name: web, image: nginx}]}\n';
    const { code, stderr } = run(['-f', '-'], pod);
    expect(code).toBe(1);
    expect(stderr).toContain('Pod shop/web: refused: annotation flomesh.io/inbound-port-exclusion-list: "http" is not a port number');
  });

  it('exits 1 with a clear message on input that is not YAML', () => {
    const { code, stdout, stderr } = run(['-f', '-'], 'kind: [unclosed');
    expect(code).toBe(1);
    expect(stdout).toBe('');
    expect(stderr).toMatch(/^flb: the input is not valid YAML: /);
  });
});
