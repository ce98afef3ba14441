import { describe, expect, it } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';

const flb = fileURLToPath(new URL('../bin/flb.js', import.meta.url));
const workloads = fileURLToPath(new URL('./testdata/manifests/workloads.yaml', import.meta.url));
const kinds = fileURLToPath(new URL('./testdata/manifests/kinds.yaml', import.meta.url));
const folder = fileURLToPath(new URL('./testdata/manifests/folder', import.meta.url));
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
    expect(sidecars(deployment)).toEqual(['flb-sidecar', 'flb-init']);
    expect((template(deployment) as { metadata?: { namespace?: string } }).metadata?.namespace).toBeUndefined();
    expect(sidecars(statefulSet)).toEqual([]);
    expect(sidecars(cronJob)).toEqual(['flb-sidecar', 'flb-init']);
    expect(sidecars(list.items![0]!)).toEqual([]);
    expect(sidecars(list.items![1]!)).toEqual(['flb-sidecar', 'flb-init']);
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
    expect(stderr).toContain('hint: fix the pod annotation named above');
  });

  it('names every problem of a refused pod at once, and calls a bad label a label', () => {
    const pod = (labels: string, annotations: string) =>
      `apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop, labels: {${labels}}, annotations: {${annotations}}}\nspec: {containers: [{name: web, image: nginx}]}\n`;
    const label = run(['-f', '-'], pod('flomesh.io/inject: "yes"', ''));
    expect(label.code).toBe(1);
    expect(label.stderr).toContain('Pod shop/web: refused: pod label flomesh.io/inject must be "true" or "false", not "yes"');
    expect(label.stderr).toContain('hint: fix the pod label named above');
    const both = run(['-f', '-'], pod('flomesh.io/inject: "yes"', 'flomesh.io/inbound-port-exclusion-list: "http,9090,ssh", flomesh.io/proxy-cpu-limit: lots'));
    expect(both.stderr).toContain(
      'Pod shop/web: refused: pod label flomesh.io/inject must be "true" or "false", not "yes"; ' +
        'annotation flomesh.io/inbound-port-exclusion-list: "http", "ssh" are not port numbers 1-65535 (expected a comma-separated list such as "5432,6379"); ' +
        'annotation flomesh.io/proxy-cpu-limit: "lots" is not a Kubernetes quantity such as 100m or 128Mi\n',
    );
    expect(both.stderr).toContain('hint: fix the pod label and pod annotations named above');
  });

  it('prints a Pod Security conflict on stderr, with or without --explain, and still writes the manifests', () => {
    const args = ['-f', workloads, '--namespace-label', 'flomesh.io/inject=enabled', '--namespace-label', 'pod-security.kubernetes.io/enforce=restricted'];
    const conflict = 'Deployment shop/orders: warning: namespace shop enforces Pod Security "restricted", which rejects the flb-init init container';
    const plain = run(args);
    expect(plain.code).toBe(0);
    expect(plain.stderr).toContain(conflict);
    expect(YAML.parseAllDocuments(plain.stdout)).toHaveLength(5);
    expect(run([...args, '--explain']).stderr).toContain(conflict);
  });

  it('says that the annotation alone does not opt a pod in, as the webhook (which selects by label) would not', () => {
    const pod =
      'apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: legacy, annotations: {flomesh.io/inject: "true"}}\nspec: {containers: [{name: web, image: nginx}]}\n';
    const { code, stdout } = run(['-f', '-', '--explain', '--namespace-label', 'team=legacy'], pod);
    expect(code).toBe(0);
    expect(stdout).toBe(
      'Pod legacy/web: skip, pod-annotation-opt-in (the pod asks for a sidecar with the annotation flomesh.io/inject: "true", which the webhook cannot see (it selects pods by label); label the pod flomesh.io/inject=true instead)\n',
    );
  });

  it("reads a folder's .yaml, .yml and .json files in name order, its subfolders only with -R", () => {
    const { code, stdout, stderr } = run(['-f', folder, '--explain']);
    expect(stderr).toBe('');
    expect(code).toBe(0);
    // Byte order, as kubectl: "10-deployment.yaml" before "2-pod.json"; notes.txt is not read.
    expect(stdout.trim().split('\n')).toEqual([
      'Deployment shop/orders: inject (namespace label flomesh.io/inject=enabled)',
      'Pod shop/debug: inject (namespace label flomesh.io/inject=enabled)',
    ]);
    const recursive = run(['-f', folder, '-R']);
    expect(recursive.code).toBe(0);
    const docs = YAML.parseAllDocuments(recursive.stdout).map((d) => d.toJS() as Doc);
    expect(docs.map((d) => `${d.kind} ${d.metadata.name}`)).toEqual(['Deployment orders', 'Pod debug', 'Job migrate']);
    expect(sidecars(docs[2]!)).toEqual(['flb-sidecar', 'flb-init']);
  });

  it('says what to do with a folder that holds no manifests, or a path that does not exist', () => {
    const none = run(['-f', join(folder, '..', '..')]);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/holds no \.yaml, \.yml or \.json file \(its subfolders are not read\)\nhint: add -R to read its subfolders too\n$/);
    const missing = run(['-f', join(folder, 'missing.yaml')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^flb: cannot read .*missing.yaml: ENOENT/);
  });

  it('injects an Argo Rollout and a PodTemplate; says why a Rollout without a template and a look-alike kind are left alone', () => {
    const { code, stdout } = run(['-f', kinds]);
    expect(code).toBe(0);
    const docs = YAML.parseAllDocuments(stdout).map((d) => d.toJS() as Doc & { template?: { spec: { initContainers?: { name: string }[] } } });
    expect(sidecars(docs[0]!)).toEqual(['flb-sidecar', 'flb-init']);
    const env = (
      docs[0]!.spec as { template: { spec: { initContainers: { name: string; env: { name: string; value?: string }[] }[] } } }
    ).template.spec.initContainers.find((c) => c.name === 'flb-sidecar')!.env;
    expect(env.find((e) => e.name === 'FLB_WORKLOAD_KIND')?.value).toBe('Rollout');
    expect(docs[3]!.template!.spec.initContainers!.map((c) => c.name)).toEqual(['flb-sidecar', 'flb-init']);
    expect(run(['-f', kinds, '--explain']).stdout.trim().split('\n')).toEqual([
      'Rollout shop/checkout: inject (namespace label flomesh.io/inject=enabled)',
      'Rollout shop/payments: ignored (Rollout has no spec.template: it uses the pod template of "payments" (spec.workloadRef); inject that workload)',
      'Deployment shop/not-a-workload: ignored (example.com/v1 Deployment is not the Deployment of apps or extensions)',
      'PodTemplate shop/worker: inject (namespace label flomesh.io/inject=enabled)',
    ]);
  });

  it('passes the sidecar and flb-init only flags that `flb sidecar` and `flb iptables apply` have', () => {
    const injected = YAML.parseAllDocuments(run(['-f', workloads]).stdout)[0]!.toJS() as Doc;
    const initContainers = (template(injected).spec as { initContainers: { name: string; args?: string[] }[] }).initContainers;
    const argsOf = (name: string) => initContainers.find((c) => c.name === name)!.args!;
    const helpOf = (...command: string[]) => spawnSync(process.execPath, [flb, ...command, '--help'], { encoding: 'utf8' }).stdout;
    const sidecarHelp = helpOf('sidecar');
    expect(argsOf('flb-sidecar').length).toBe(8);
    for (const arg of argsOf('flb-sidecar')) expect(sidecarHelp).toContain(`${arg.slice(0, arg.indexOf('='))} <`);
    const initHelp = helpOf('iptables', 'apply');
    expect(argsOf('flb-init')).toHaveLength(3);
    for (const arg of argsOf('flb-init')) expect(initHelp).toContain(arg.includes('=') ? `${arg.slice(0, arg.indexOf('='))} <` : arg);
  });

  it('exits 1 with a clear message on input that is not YAML', () => {
    const { code, stdout, stderr } = run(['-f', '-'], 'kind: [unclosed');
    expect(code).toBe(1);
    expect(stdout).toBe('');
    expect(stderr).toMatch(/^flb: standard input is not valid YAML or JSON: /);
  });
});
