// The Helm chart charts/flb-mesh: helm lint and template, its values schema, the webhook
// configuration `flb webhook install` builds, least-privilege RBAC, network policies; then every
// rendered object against a real kube-apiserver (server-side dry run, strict field validation),
// and an install followed by upgrades that must keep the repo's data and the injector's caBundle.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { X509Certificate } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AdmissionregistrationV1Api, AppsV1Api, CoreV1Api, type V1StatefulSet } from '@kubernetes/client-node';
import { execa } from 'execa';
import YAML from 'yaml';
import { BridgeConfigSchema, defaultMesh, SIDECAR_INJECTED_LABEL, SIDECAR_INJECTED_VALUE, REPO_CA_CONFIGMAP } from '../common/contract/index.js';
import { checkFeatures, defaultCgroup } from '../bpf/loader.js';
import { meshParts, podSidecar } from '../injector/mesh-parts.js';
import { FLB_MESH_VERSION } from '../common/contract/version.js';
import { CHECKOUT } from '../devenv/node-simulator/images.js';
import { CHART_DIR, find, Helm, VALUES_SCHEMA_FILE, valuesSchemaWithContract, type KubeObject } from './harness/chart.js';
import { startControlPlane, type ControlPlane } from '../devenv/controlplane.js';
import { testBinary } from '../devenv/cache.js';
import { eventually } from './harness/eventually.js';

type Rule = { apiGroups: string[]; resources: string[]; verbs: string[]; resourceNames?: string[] };
type Container = { name: string; image: string; args?: string[]; lifecycle?: { preStop?: { exec?: { command?: string[] } } } };
type PodSpec = { containers: Container[]; imagePullSecrets?: { name: string }[]; priorityClassName?: string };
type EbpfPodSpec = PodSpec & { hostNetwork?: boolean; hostPID?: boolean; volumes: { name: string; hostPath?: { path: string; type?: string } }[] };
type EbpfAgentContainer = Container & {
  args: string[];
  securityContext: Record<string, unknown>;
  volumeMounts: { name: string; mountPath: string; mountPropagation?: string; readOnly?: boolean }[];
};
const podSpec = (o: KubeObject) => (o.spec as { template: { spec: PodSpec } }).template.spec;
const workloads = (objects: KubeObject[]) => objects.filter((o) => ['Deployment', 'StatefulSet', 'DaemonSet'].includes(o.kind));
/** A file of a rendered ConfigMap. */
const configMapFile = (objects: KubeObject[], name: string, key: string): string => {
  const text = (find(objects, 'ConfigMap', name).data as Record<string, string | undefined>)[key];
  if (text === undefined) throw new Error(`ConfigMap ${name} has no ${key}`);
  return text;
};
interface RenderedMesh {
  controlPlaneNamespace: string;
  repo: { url: string; tokenAudience: string };
  interception: { mode: string };
  sidecar: { image: string };
  init: { image: string };
}
const meshSettings = (objects: KubeObject[]) => YAML.parse(configMapFile(objects, 'flb-mesh', 'mesh.yaml')) as RenderedMesh;
type NetworkPolicySpec = { podSelector: { matchLabels: Record<string, string> }; ingress: { ports: unknown[]; from: unknown[] }[] };
/** Registry sinks as the chart README's example has them: a Consul sink with its token from a Secret, a Kubernetes sink. */
const sinkValues = {
  bridge: {
    sources: [{ kind: 'kubernetes' }, { kind: 'consul', address: 'http://consul.example:8500', tokenFile: '/etc/consul-token/token' }],
    sinks: [
      { kind: 'consul', address: 'http://consul.example:8500', tokenFile: '/etc/consul-token/token', from: ['kubernetes'] },
      { kind: 'kubernetes', namespace: 'registry', from: ['consul'] },
    ],
    extraVolumes: [{ name: 'consul-token', secret: { secretName: 'consul-token' } }],
    extraVolumeMounts: [{ name: 'consul-token', mountPath: '/etc/consul-token', readOnly: true }],
  },
};
const selectorOf = (o: KubeObject) => (o.spec as { selector: { matchLabels: Record<string, string> } }).selector.matchLabels;

describe('the flb-mesh chart', () => {
  // Made in beforeAll, not here: a describe whose tests are all filtered out runs no hook, and would leak its folders.
  let helm: Helm;
  let defaults: KubeObject[];
  let cniMode: KubeObject[];
  let withSinks: KubeObject[];
  beforeAll(async () => {
    helm = new Helm();
    defaults = await helm.render();
    cniMode = await helm.render({ mesh: { interception: { mode: 'cni' } } });
    withSinks = await helm.render(sinkValues);
  });
  afterAll(() => helm?.dispose());

  it('passes helm lint in iptables, CNI and eBPF mode', async () => {
    for (const values of [
      {},
      { mesh: { interception: { mode: 'cni' } }, metrics: { serviceMonitor: { enabled: true } } },
      { mesh: { interception: { mode: 'ebpf' } } },
    ]) {
      const lint = await helm.run(['lint', '--strict', CHART_DIR, '-f', helm.valuesFile('lint', values)]);
      expect({ exitCode: lint.exitCode, stderr: lint.stderr }).toEqual({ exitCode: 0, stderr: '' });
      expect(lint.stdout).toContain('1 chart(s) linted, 0 chart(s) failed');
    }
  });

  it("ships with this release: the chart's appVersion is flb-mesh's version, the tag of every image it deploys and injects", () => {
    const chart = YAML.parse(readFileSync(join(CHART_DIR, 'Chart.yaml'), 'utf8')) as { version: string; appVersion: string };
    expect(chart.appVersion).toBe(FLB_MESH_VERSION);
    for (const workload of workloads(cniMode)) {
      for (const container of podSpec(workload).containers) expect(container.image).toBe(`flomesh/flb-mesh-control-plane:${FLB_MESH_VERSION}`);
    }
    const mesh = meshSettings(defaults);
    expect(mesh.sidecar.image).toBe(`flomesh/flb-mesh:${FLB_MESH_VERSION}`);
    expect(mesh.init.image).toBe(`flomesh/flb-mesh:${FLB_MESH_VERSION}`);
  });

  it("keeps values.schema.json's mesh, bridge.sources and bridge.sinks the contract's (UPDATE_GOLDEN=1 rewrites them)", () => {
    const wanted = valuesSchemaWithContract();
    if (process.env.UPDATE_GOLDEN === '1') writeFileSync(VALUES_SCHEMA_FILE, wanted);
    expect(readFileSync(VALUES_SCHEMA_FILE, 'utf8')).toBe(wanted);
  });

  it('renders the webhook configuration `flb webhook install --service` prints, with no caBundle', async () => {
    const cases = [
      { namespace: 'flomesh', values: {}, flags: [] },
      {
        namespace: 'mesh-system',
        values: { webhook: { failurePolicy: 'Ignore', timeoutSeconds: 3 } },
        flags: ['--failure-policy', 'Ignore', '--timeout-seconds', '3'],
      },
    ];
    for (const { namespace, values, flags } of cases) {
      const rendered = find(await helm.render(values, { namespace }), 'MutatingWebhookConfiguration', 'flb-sidecar-injector');
      const printed = await execa(process.execPath, [
        join(CHECKOUT, 'bin/flb.js'),
        'webhook',
        'install',
        '--service',
        `${namespace}/flb-injector:443`,
        '--namespace',
        namespace,
        '--print',
        ...flags,
      ]);
      const built = YAML.parse(printed.stdout) as KubeObject;
      const { labels: renderedLabels, ...renderedMetadata } = rendered.metadata;
      const { labels: builtLabels, ...builtMetadata } = built.metadata;
      expect({ ...rendered, metadata: renderedMetadata }).toEqual({ ...built, metadata: builtMetadata });
      // The chart's labels are helm's usual ones on top of what flb webhook install sets.
      expect(renderedLabels).toMatchObject(builtLabels!);
      expect(JSON.stringify(rendered)).not.toContain('caBundle');
    }
  });

  it('refuses bad values naming the field, and the reserved but unbuilt choices', async () => {
    const cases: [unknown, RegExp][] = [
      [{ webhook: { failurePolicy: 'Sometimes' } }, /\/webhook\/failurePolicy/],
      [{ webhook: { timeoutSeconds: 60 } }, /\/webhook\/timeoutSeconds/],
      [{ mesh: { interception: { mode: 'bpf' } } }, /\/mesh\/interception\/mode/],
      [{ cni: { ebpf: { cgroup: 'sys/fs/cgroup/unified' } } }, /\/cni\/ebpf\/cgroup/],
      [{ mesh: { interception: { mdoe: 'cni' } } }, /\/mesh\/interception.*mdoe/],
      [{ mesh: { tls: { mode: 'strict' } } }, /\/mesh\/tls\/mode/],
      [{ mesh: { ports: { outbound: 70000 } } }, /\/mesh\/ports\/outbound/],
      [{ mesh: { controlPlaneNamespace: 'elsewhere' } }, /\/mesh.*controlPlaneNamespace/],
      [{ repo: { persistence: { size: 'lots' } } }, /\/repo\/persistence\/size/],
      [{ webhookIngressCIDRs: [] }, /\/webhookIngressCIDRs/],
      [{ vmCIDRs: ['10.0.0.0/33'] }, /\/vmCIDRs\/0/],
      [{ bridge: { sources: [{ kind: 'zookeeper' }] } }, /\/bridge\/sources\/0/],
      [{ bridge: { sinks: [{ kind: 'eureka' }] } }, /\/bridge\/sinks\/0/],
      [{ bridge: { sinks: [{ kind: 'kubernetes' }] } }, /\/bridge\/sinks\/0.*namespace/],
      [{ bridge: { sinks: [{ kind: 'kubernetes', namespace: 'Registry' }] } }, /\/bridge\/sinks\/0\/namespace/],
      [{ bridge: { sinks: [{ kind: 'consul', adress: 'http://consul:8500' }] } }, /\/bridge\/sinks\/0.*adress/],
      [{ bridge: { sinks: [{ kind: 'consul', resyncSeconds: 1 }] } }, /\/bridge\/sinks\/0\/resyncSeconds/],
      // Above the 30 s a Eureka server's self-preservation counts on.
      [
        { bridge: { sinks: [{ kind: 'eureka', servers: ['http://eureka:8761/eureka/'], renewalIntervalSeconds: 60 }] } },
        /\/bridge\/sinks\/0\/renewalIntervalSeconds/,
      ],
      // The repo sink is the chart's own.
      [{ bridge: { sinks: [{ kind: 'repo', url: 'https://elsewhere:6060' }] } }, /\/bridge\/sinks\/0/],
      [{ injector: { replicas: 'two' } }, /\/injector\/replicas/],
      [{ priorityClasses: { node: { value: 2000000000 } } }, /\/priorityClasses\/node\/value/],
      [{ imageTag: '1.0' }, /imageTag/],
    ];
    for (const [values, field] of cases) {
      const result = await helm.run(['template', 'flb', CHART_DIR, '-n', 'flomesh', '-f', helm.valuesFile('bad', values)]);
      expect({ values, exitCode: result.exitCode }).toEqual({ values, exitCode: 1 });
      expect(result.stderr).toContain("values don't meet the specifications of the schema");
      expect(result.stderr).toMatch(field);
      expect(result.stdout).toBe('');
    }
    const blocking = await helm.run(['template', 'flb', CHART_DIR, '-f', helm.valuesFile('pdb', { injector: { replicas: 1 } })]);
    expect(blocking.exitCode).toBe(1);
    expect(blocking.stderr).toContain('injector.podDisruptionBudget.minAvailable (1) must be less than injector.replicas (1)');
  });

  it("refuses the sinks the BridgeConfig's own check refuses (one field against another), naming the field, at install", async () => {
    const repoSink = (YAML.parse(configMapFile(defaults, 'flb-bridge-config', 'bridge.yaml')) as { sinks: unknown[] }).sinks[0];
    const kubernetes = { kind: 'kubernetes' };
    const cases: [{ sources?: unknown[]; sinks: unknown[] }, string][] = [
      [
        { sinks: [{ kind: 'kubernetes', name: 'repo', namespace: 'registry' }] },
        'bridge.sinks[0].name: repo is already the repo sink, which the chart configures itself',
      ],
      [
        {
          sinks: [
            { kind: 'kubernetes', namespace: 'registry' },
            { kind: 'kubernetes', namespace: 'other' },
          ],
        },
        "bridge.sinks[1].name: kubernetes is already bridge.sinks[0]'s",
      ],
      [{ sinks: [{ kind: 'consul', from: ['kubernets'] }] }, 'bridge.sinks[0].from[0]: no source in bridge.sources is named kubernets'],
      [
        { sinks: [{ kind: 'kubernetes', namespace: 'registry', from: ['kubernetes'] }] },
        'bridge.sinks[0].from[0]: source kubernetes reads the registry this sink writes',
      ],
      [
        { sources: [kubernetes, { kind: 'consul', name: 'dc1' }], sinks: [{ kind: 'consul', from: ['kubernetes', 'dc1'] }] },
        'bridge.sinks[0].from[1]: source dc1 reads the registry this sink writes',
      ],
      [
        {
          sources: [kubernetes, { kind: 'eureka', servers: ['http://eureka-1:8761/eureka/', 'http://eureka-2:8761/eureka/'] }],
          sinks: [{ kind: 'eureka', servers: ['http://eureka-2:8761/eureka/'], from: ['kubernetes', 'eureka'] }],
        },
        'bridge.sinks[0].from[1]: source eureka reads the registry this sink writes',
      ],
      // The default renewal interval (30 s) against a lease one late renewal would outlast.
      [
        { sinks: [{ kind: 'eureka', servers: ['http://eureka:8761/eureka/'], leaseDurationSeconds: 50 }] },
        'bridge.sinks[0].leaseDurationSeconds: 50 must be at least twice renewalIntervalSeconds (30)',
      ],
      [
        { sinks: [{ kind: 'consul' }, { kind: 'eureka', servers: ['http://eureka:8761/eureka/'], renewalIntervalSeconds: 10, leaseDurationSeconds: 19 }] },
        'bridge.sinks[1].leaseDurationSeconds: 19 must be at least twice renewalIntervalSeconds (10)',
      ],
    ];
    for (const [bridge, message] of cases) {
      const sources = bridge.sources ?? [kubernetes];
      const result = await helm.run(['template', 'flb', CHART_DIR, '-f', helm.valuesFile('cross', { bridge: { sources, sinks: bridge.sinks } })]);
      expect({ bridge, exitCode: result.exitCode }).toEqual({ bridge, exitCode: 1 });
      expect(result.stderr).toContain(message);
      // The bridge would refuse it too: the chart says no more than the contract.
      const config = YAML.parse(configMapFile(defaults, 'flb-bridge-config', 'bridge.yaml')) as Record<string, unknown>;
      expect(BridgeConfigSchema.safeParse({ ...config, sources, sinks: [repoSink, ...bridge.sinks] }).success).toBe(false);
    }
    // A Consul sink from a Consul source on another Consul is fine.
    const elsewhere = { sources: [{ kind: 'consul', address: 'http://dc1:8500' }], sinks: [{ kind: 'consul', address: 'http://dc2:8500', from: ['consul'] }] };
    const rendered = YAML.parse(configMapFile(await helm.render({ bridge: elsewhere }), 'flb-bridge-config', 'bridge.yaml')) as unknown;
    expect(BridgeConfigSchema.safeParse(rendered).success).toBe(true);
    // A Eureka sink whose lease is exactly twice its renewal interval is fine.
    const eurekaSink = { sinks: [{ kind: 'eureka', servers: ['http://eureka:8761/eureka/'], renewalIntervalSeconds: 10, leaseDurationSeconds: 20 }] };
    const renderedEureka = YAML.parse(configMapFile(await helm.render({ bridge: eurekaSink }), 'flb-bridge-config', 'bridge.yaml')) as unknown;
    expect(BridgeConfigSchema.safeParse(renderedEureka).success).toBe(true);
  });

  it('grants least privilege: no wildcard, no Secret outside its namespace, no built-in role; every rule explained in the README', async () => {
    const readme = readFileSync(join(CHART_DIR, 'README.md'), 'utf8');
    const documented = new Set(
      readme
        .split('\n')
        .filter((line) => line.startsWith('| `'))
        .map((line) =>
          line
            .split('|')
            .slice(1, 5)
            .map((cell) => cell.trim())
            .join(' | '),
        ),
    );
    for (const objects of [defaults, cniMode, withSinks]) {
      const roles = objects.filter((o) => o.kind === 'ClusterRole' || o.kind === 'Role');
      expect(roles.length).toBeGreaterThan(0);
      for (const role of roles) {
        for (const rule of role.rules as Rule[]) {
          for (const field of [rule.apiGroups, rule.resources, rule.verbs]) expect(field).not.toContain('*');
          if (role.kind === 'ClusterRole') expect(rule.resources).not.toContain('secrets');
          // One README row per rule: role | api group | resources (names) | verbs.
          const resources = rule.resources.join(', ') + (rule.resourceNames ? ` (${rule.resourceNames.join(', ')})` : '');
          const row = [
            `\`${role.kind} ${role.metadata.name}\``,
            `\`${rule.apiGroups.join(', ') || 'core'}\``,
            `\`${resources}\``,
            `\`${rule.verbs.join(', ')}\``,
          ].join(' | ');
          expect({ row, documented: documented.has(row) }).toEqual({ row, documented: true });
        }
      }
      for (const binding of objects.filter((o) => o.kind.endsWith('Binding'))) {
        const { roleRef, subjects } = binding as unknown as { roleRef: { kind: string; name: string }; subjects: { kind: string; name: string }[] };
        const bound = roles.find((r) => r.kind === roleRef.kind && r.metadata.name === roleRef.name && r.metadata.namespace === binding.metadata.namespace);
        expect(bound).toBeDefined();
        // The Kubernetes sink's Role is the bridge's, in another namespace.
        const serviceAccount = roleRef.name === 'flb-bridge-sink' ? 'flb-bridge' : roleRef.name;
        expect(subjects).toEqual([{ kind: 'ServiceAccount', name: serviceAccount, namespace: 'flomesh' }]);
      }
    }
    // The CNI agent's pod rights follow its repair mode.
    const agentRules = async (repair: string) =>
      (find(await helm.render({ mesh: { interception: { mode: 'cni' } }, cni: { repair } }), 'ClusterRole', 'flb-cni-node').rules as Rule[]).flatMap((r) =>
        r.verbs.map((v) => `${r.resources.join(',')}:${v}`),
      );
    expect(await agentRules('off')).toEqual(['pods:get']);
    expect(await agentRules('label')).toEqual(['pods:get', 'pods:list', 'pods:patch', 'events:create']);
    expect(await agentRules('delete')).toEqual(['pods:get', 'pods:list', 'pods:patch', 'pods:delete', 'events:create']);
  });

  it('runs the registry sinks it is given after its repo sink, in a BridgeConfig the contract takes, with the files they name mounted', () => {
    const text = configMapFile(withSinks, 'flb-bridge-config', 'bridge.yaml');
    const parsed = BridgeConfigSchema.safeParse(YAML.parse(text));
    expect(parsed.error?.issues ?? []).toEqual([]);
    expect(parsed.data!.sinks.map((s) => [s.kind, s.name])).toEqual([
      ['repo', 'repo'],
      ['consul', 'consul'],
      ['kubernetes', 'kubernetes'],
    ]);
    const bridge = podSpec(find(withSinks, 'Deployment', 'flb-bridge')) as PodSpec & { volumes: { name: string }[] };
    expect(bridge.containers[0]).toMatchObject({
      volumeMounts: expect.arrayContaining([{ name: 'consul-token', mountPath: '/etc/consul-token', readOnly: true }]),
    });
    expect(bridge.volumes).toContainEqual({ name: 'consul-token', secret: { secretName: 'consul-token' } });
    // A new sink restarts the bridge: its config is read at start.
    const checksum = (objects: KubeObject[]) =>
      (find(objects, 'Deployment', 'flb-bridge').spec as { template: { metadata: { annotations: Record<string, string> } } }).template.metadata.annotations[
        'checksum/config'
      ];
    expect(checksum(withSinks)).not.toBe(checksum(defaults));
    // By default the repo sink alone, as before sinks were values.
    expect((YAML.parse(configMapFile(defaults, 'flb-bridge-config', 'bridge.yaml')) as { sinks: { kind: string }[] }).sinks.map((s) => s.kind)).toEqual([
      'repo',
    ]);
  });

  it("gives the bridge a Role in a Kubernetes sink's namespace only, with the verbs the sink uses, one per namespace", async () => {
    const sinkRoles = (objects: KubeObject[]) =>
      objects.filter((o) => o.metadata.name === 'flb-bridge-sink').map((o) => `${o.kind} ${o.metadata.namespace ?? ''}`);
    expect(sinkRoles(defaults)).toEqual([]);
    expect(sinkRoles(withSinks)).toEqual(['Role registry', 'RoleBinding registry']);
    expect(find(withSinks, 'Role', 'flb-bridge-sink').rules).toEqual([
      { apiGroups: [''], resources: ['services'], verbs: ['get', 'list', 'create', 'update', 'delete'] },
      { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['get', 'list', 'create', 'update', 'delete'] },
    ]);
    // A Consul sink needs no Kubernetes permission.
    const consulOnly = await helm.render({ bridge: { sinks: [sinkValues.bridge.sinks[0]] } });
    expect(sinkRoles(consulOnly)).toEqual([]);
    const two = await helm.render({
      bridge: {
        sources: [{ kind: 'consul' }, { kind: 'eureka', servers: ['http://eureka:8761/eureka/'] }],
        sinks: [
          { kind: 'kubernetes', name: 'from-consul', namespace: 'registry', from: ['consul'] },
          { kind: 'kubernetes', name: 'from-eureka', namespace: 'registry', from: ['eureka'], servicePrefix: 'eureka-' },
          { kind: 'kubernetes', name: 'legacy', namespace: 'legacy', from: ['eureka'] },
        ],
      },
    });
    expect(sinkRoles(two)).toEqual(['Role registry', 'Role legacy', 'RoleBinding registry', 'RoleBinding legacy']);
  });

  it("reads YAML 1.1's unquoted off, true and false (booleans to helm) as the flags they name", async () => {
    const valuesText = 'mesh:\n  interception:\n    mode: cni\ncni:\n  repair: off\ninjector:\n  nativeSidecars: false\n';
    const file = helm.valuesFile('yaml11', {});
    writeFileSync(file, valuesText);
    const result = await helm.run(['template', 'flb', CHART_DIR, '-n', 'flomesh', '-f', file]);
    expect(result.stderr).toBe('');
    const objects = YAML.parseAllDocuments(result.stdout).map((d) => d.toJS() as KubeObject);
    expect(podSpec(find(objects, 'DaemonSet', 'flb-cni-node')).containers[0]!.args).toContain('--repair=off');
    expect(podSpec(find(objects, 'Deployment', 'flb-injector')).containers[0]!.args).toContain('--native-sidecars=false');
  });

  it('opens the webhook port to webhookIngressCIDRs and the repo to injected pods, the bridge and vmCIDRs only', async () => {
    const objects = await helm.render({ webhookIngressCIDRs: ['172.16.0.0/12'], vmCIDRs: ['192.168.10.0/24', 'fd00:10::/64'] });
    const injector = find(objects, 'NetworkPolicy', 'flb-injector').spec as NetworkPolicySpec;
    expect(injector.podSelector.matchLabels).toEqual(selectorOf(find(objects, 'Deployment', 'flb-injector')));
    expect(injector.ingress[0]).toEqual({ ports: [{ port: 'webhook', protocol: 'TCP' }], from: [{ ipBlock: { cidr: '172.16.0.0/12' } }] });
    const repo = find(objects, 'NetworkPolicy', 'flb-repo').spec as NetworkPolicySpec;
    expect(repo.podSelector.matchLabels).toEqual(selectorOf(find(objects, 'StatefulSet', 'flb-repo')));
    expect(repo.ingress).toEqual([
      {
        ports: [{ port: 'https', protocol: 'TCP' }],
        from: [
          { namespaceSelector: {}, podSelector: { matchLabels: { [SIDECAR_INJECTED_LABEL]: SIDECAR_INJECTED_VALUE } } },
          { podSelector: { matchLabels: selectorOf(find(objects, 'Deployment', 'flb-bridge')) } },
          { ipBlock: { cidr: '192.168.10.0/24' } },
          { ipBlock: { cidr: 'fd00:10::/64' } },
        ],
      },
    ]);
    // Named ports the policies open exist on the pods they select.
    const ports = (o: KubeObject) => podSpec(o).containers.flatMap((c) => ((c as { ports?: { name: string }[] }).ports ?? []).map((p) => p.name));
    expect(ports(find(objects, 'Deployment', 'flb-injector'))).toEqual(expect.arrayContaining(['webhook', 'metrics']));
    expect(ports(find(objects, 'StatefulSet', 'flb-repo'))).toEqual(['https']);
    expect(objects.filter((o) => o.kind === 'NetworkPolicy')).toHaveLength(3);
    expect((await helm.render({ networkPolicies: { enabled: false } })).filter((o) => o.kind === 'NetworkPolicy')).toHaveLength(0);
  });

  it('takes the image registry, tag and pull secrets everywhere, the injected sidecar included', async () => {
    const objects = await helm.render({
      mesh: { interception: { mode: 'cni' } },
      image: { registry: 'registry.example.com/mirror', tag: '9.9.9', pullSecrets: ['mirror-pull'] },
    });
    for (const workload of workloads(objects)) {
      const spec = podSpec(workload);
      expect(spec.imagePullSecrets).toEqual([{ name: 'mirror-pull' }]);
      for (const container of spec.containers) expect(container.image).toBe('registry.example.com/mirror/flomesh/flb-mesh-control-plane:9.9.9');
    }
    const mesh = meshSettings(objects);
    expect([mesh.sidecar.image, mesh.init.image]).toEqual([
      'registry.example.com/mirror/flomesh/flb-mesh:9.9.9',
      'registry.example.com/mirror/flomesh/flb-mesh:9.9.9',
    ]);
    // An image the mesh settings name stays theirs.
    const own = meshSettings(await helm.render({ mesh: { sidecar: { image: 'example/pipy:1.5' } } }));
    expect(own.sidecar.image).toBe('example/pipy:1.5');
  });

  it('runs the CNI node agent only in CNI mode, taking its plugin out of the chain when it stops, at the node priority', () => {
    expect(defaults.filter((o) => o.kind === 'DaemonSet')).toEqual([]);
    expect(defaults.filter((o) => o.kind === 'PriorityClass').map((o) => o.metadata.name)).toEqual(['flb-mesh-control-plane']);
    const daemonSet = find(cniMode, 'DaemonSet', 'flb-cni-node');
    const spec = podSpec(daemonSet) as PodSpec & { hostNetwork: boolean };
    expect(spec.hostNetwork).toBe(true);
    expect(spec.priorityClassName).toBe('flb-mesh-node');
    expect(find(cniMode, 'PriorityClass', 'flb-mesh-node').value).toBe(1000000000);
    const install = spec.containers.find((c) => c.name === 'install')!;
    expect(install.args?.slice(0, 3)).toEqual(['cni', 'install', '--watch']);
    expect(install.lifecycle?.preStop?.exec?.command).toEqual(['flb', 'cni', 'uninstall', '--conf-dir=/host/cni/net.d', '--bin-dir=/host/cni/bin']);
    for (const workload of workloads(defaults)) expect(podSpec(workload).priorityClassName).toBe('flb-mesh-control-plane');
    expect(meshSettings(cniMode).interception.mode).toBe('cni');
    // CNI mode's agent stays unprivileged, in its own PID namespace, with no eBPF mount or flag.
    const cniAgent = spec.containers.find((c) => c.name === 'agent') as EbpfAgentContainer;
    expect((spec as EbpfPodSpec).hostPID).toBeUndefined();
    expect(cniAgent.securityContext).toEqual({
      runAsUser: 0,
      runAsNonRoot: false,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'], add: ['NET_ADMIN', 'NET_RAW', 'SYS_ADMIN'] },
    });
    expect(cniAgent.args.filter((a) => /^--(mesh|bpf-cgroup|bpffs)=/.test(a))).toEqual([]);
    expect((spec as EbpfPodSpec).volumes.map((v) => v.name).sort()).toEqual(['cni-bin', 'cni-conf', 'netns', 'run']);
  });

  it("runs the node agent in eBPF mode with bpffs (Bidirectional), the host's cgroup v2 hierarchy and PIDs, privileged, with its eBPF flags", async () => {
    const objects = await helm.render({ mesh: { name: 'shop-mesh', interception: { mode: 'ebpf' } } });
    expect(meshSettings(objects).interception.mode).toBe('ebpf');
    const spec = podSpec(find(objects, 'DaemonSet', 'flb-cni-node')) as EbpfPodSpec;
    expect({ hostNetwork: spec.hostNetwork, hostPID: spec.hostPID, priorityClassName: spec.priorityClassName }).toEqual({
      hostNetwork: true,
      hostPID: true,
      priorityClassName: 'flb-mesh-node',
    });
    const agent = spec.containers.find((c) => c.name === 'agent') as EbpfAgentContainer;
    expect(agent.args.slice(0, 2)).toEqual(['cni', 'agent']);
    expect(agent.args).toEqual(expect.arrayContaining(['--mesh=shop-mesh', '--bpf-cgroup=auto', '--host-root=/host', '--bpffs=/sys/fs/bpf']));
    // privileged: Bidirectional propagation needs it (the API refuses it otherwise: the dry run below).
    expect(agent.securityContext).toEqual({ runAsUser: 0, runAsNonRoot: false, privileged: true, readOnlyRootFilesystem: true });
    const hostPathOf = (name: string) => spec.volumes.find((v) => v.name === name)?.hostPath?.path;
    const mountOf = (name: string) => agent.volumeMounts.find((m) => m.name === name);
    expect([mountOf('bpffs'), hostPathOf('bpffs')]).toEqual([{ name: 'bpffs', mountPath: '/sys/fs/bpf', mountPropagation: 'Bidirectional' }, '/sys/fs/bpf']);
    // cgroup auto: the host's whole /sys/fs/cgroup under --host-root, the hierarchy found in it from the host's mount table.
    expect([mountOf('host-cgroup'), hostPathOf('host-cgroup')]).toEqual([
      { name: 'host-cgroup', mountPath: '/host/sys/fs/cgroup', mountPropagation: 'HostToContainer', readOnly: true },
      '/sys/fs/cgroup',
    ]);
    expect(hostPathOf('cgroup2')).toBeUndefined();
    // The installer container is the CNI mode's: no privilege.
    const install = spec.containers.find((c) => c.name === 'install') as EbpfAgentContainer;
    expect(install.securityContext).toMatchObject({ allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } });
    // What CNI mode deploys with its agent deploys with it: the node's PriorityClass, the agent's RBAC.
    expect(find(objects, 'PriorityClass', 'flb-mesh-node').value).toBe(1000000000);
    expect(find(objects, 'ClusterRole', 'flb-cni-node').rules).toEqual(find(cniMode, 'ClusterRole', 'flb-cni-node').rules);

    // A cgroup named (a host that has it outside /sys/fs/cgroup): that folder alone, at /host/cgroup2.
    const named = await helm.render({ mesh: { interception: { mode: 'ebpf' } }, cni: { ebpf: { cgroup: '/run/cilium/cgroupv2' } } });
    const namedSpec = podSpec(find(named, 'DaemonSet', 'flb-cni-node')) as EbpfPodSpec;
    expect(namedSpec.volumes.find((v) => v.name === 'cgroup2')?.hostPath).toEqual({ path: '/run/cilium/cgroupv2', type: 'Directory' });
    expect(namedSpec.volumes.find((v) => v.name === 'host-cgroup')).toBeUndefined();
    expect(namedSpec.containers[0]!.args).toContain('--bpf-cgroup=/host/cgroup2');
    expect(namedSpec.containers[0]!.args!.filter((a) => a.startsWith('--host-root'))).toEqual([]);
  });

  it("gives the eBPF agent, with the chart's defaults, a cgroup v2 hierarchy its feature check takes on this machine (a hybrid host)", async () => {
    // The agent's volumes as the runtime makes them (a recursive, read-only bind of each hostPath),
    // under a folder of the test's standing for the container's root, and its feature check with its
    // own flags there. On a unified host and on this hybrid one alike (`findmnt -t cgroup2`).
    const objects = await helm.render({ mesh: { interception: { mode: 'ebpf' } } });
    const spec = podSpec(find(objects, 'DaemonSet', 'flb-cni-node')) as EbpfPodSpec;
    const agent = spec.containers.find((c) => c.name === 'agent') as EbpfAgentContainer;
    const flag = (name: string) => agent.args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
    const container = mkdtempSync(join(tmpdir(), 'flb-agent-root-'));
    const bound: string[] = [];
    try {
      for (const mount of agent.volumeMounts.filter((m) => /cgroup/.test(m.name))) {
        const target = join(container, mount.mountPath);
        mkdirSync(target, { recursive: true });
        await execa('mount', ['--rbind', spec.volumes.find((v) => v.name === mount.name)!.hostPath!.path, target]);
        bound.push(target);
        await execa('mount', ['--make-rslave', target]);
        await execa('mount', ['-o', 'remount,bind,ro', target]);
      }
      const cgroup = flag('bpf-cgroup')!;
      const hostRoot = flag('host-root');
      const report = await checkFeatures({
        cgroup: cgroup === 'auto' ? cgroup : join(container, cgroup),
        ...(hostRoot ? { hostRoot: join(container, hostRoot) } : {}),
        bpffs: '/sys/fs/bpf',
      });
      expect(report.missing.filter((m) => /cgroup/.test(m))).toEqual([]);
      // The hierarchy's root itself (a cgroup v2's id is its folder's inode), where every pod of the node is.
      expect(statSync(report.cgroup!).ino).toBe(statSync(defaultCgroup()!).ino);
    } finally {
      for (const target of bound.reverse()) await execa('umount', ['-R', target], { reject: false });
      rmSync(container, { recursive: true, force: true });
    }
  });

  it('wires the parts together: the repo URL, its certificates, the Lease, the mesh ConfigMap', () => {
    const mesh = meshSettings(defaults);
    expect(mesh).toMatchObject({ controlPlaneNamespace: 'flomesh', repo: { url: 'https://flb-repo.flomesh.svc:6060', tokenAudience: 'flb-repo' } });
    const bridgeConfig: unknown = YAML.parse(configMapFile(defaults, 'flb-bridge-config', 'bridge.yaml'));
    expect(bridgeConfig).toMatchObject({
      mesh: { configMap: { namespace: 'flomesh', name: 'flb-mesh' } },
      sinks: [{ kind: 'repo', url: mesh.repo.url }],
      leaderElection: { namespace: 'flomesh', name: 'flb-bridge' },
    });
    // The injector reads the same mesh settings the bridge publishes.
    expect(podSpec(find(defaults, 'Deployment', 'flb-injector')).containers[0]!.args).toContain('--mesh-configmap=flomesh/flb-mesh');
    const secret = (name: string, key: string) => Buffer.from((find(defaults, 'Secret', name).data as Record<string, string>)[key]!, 'base64').toString();
    const ca = new X509Certificate(secret('flb-repo-ca', 'ca.crt'));
    const serving = new X509Certificate(secret('flb-repo-tls', 'tls.crt'));
    const client = new X509Certificate(secret('flb-repo-client', 'tls.crt'));
    expect(serving.checkIssued(ca) && client.checkIssued(ca)).toBe(true);
    expect(serving.subjectAltName).toContain('DNS:flb-repo.flomesh.svc');
    expect(client.subject).toContain('CN=flb-control-plane');
    expect(secret('flb-repo-tls', 'ca.crt')).toBe(secret('flb-repo-ca', 'ca.crt'));
    // The injected pods' CA ConfigMap is the bridge's to keep, not the chart's.
    expect(defaults.some((o) => o.kind === 'ConfigMap' && o.metadata.name === REPO_CA_CONFIGMAP)).toBe(false);
  });

  it('renders ServiceMonitors that select the Services and ports they scrape', async () => {
    const objects = await helm.render({ metrics: { serviceMonitor: { enabled: true, labels: { release: 'prometheus' } } } });
    const monitors = objects.filter((o) => o.kind === 'ServiceMonitor');
    expect(monitors.map((m) => m.metadata.name)).toEqual(['flb-bridge', 'flb-injector']);
    for (const monitor of monitors) {
      const spec = monitor.spec as { selector: { matchLabels: Record<string, string> }; endpoints: { port: string }[] };
      const service = find(objects, 'Service', monitor.metadata.name);
      expect(service.metadata.labels).toMatchObject(spec.selector.matchLabels);
      expect((service.spec as { ports: { name: string }[] }).ports.map((p) => p.name)).toContain(spec.endpoints[0]!.port);
      expect(monitor.metadata.labels).toMatchObject({ release: 'prometheus' });
    }
  });

  it("renders a PodMonitor for every injected sidecar, by the label and the metrics port name the injector gives them, whatever the app's prometheus.io annotations", async () => {
    const objects = await helm.render({ metrics: { serviceMonitor: { enabled: true, labels: { release: 'prometheus' } } } });
    const monitor = find(objects, 'PodMonitor', 'flb-sidecars');
    expect(monitor.metadata.labels).toMatchObject({ release: 'prometheus' });
    expect(monitor.spec).toEqual({
      selector: { matchLabels: { [SIDECAR_INJECTED_LABEL]: SIDECAR_INJECTED_VALUE } },
      namespaceSelector: { any: true },
      podMetricsEndpoints: [{ port: 'flb-metrics', path: '/metrics', interval: '30s' }],
    });
    const mesh = defaultMesh();
    const sidecar = podSidecar(meshParts({ mesh, nativeSidecars: false, version: FLB_MESH_VERSION }), { kind: 'Deployment', name: 'web' }, '{}', {});
    expect(sidecar.ports).toEqual([expect.objectContaining({ name: 'flb-metrics', containerPort: mesh.ports.metrics })]);
    expect(await helm.render()).not.toContainEqual(expect.objectContaining({ kind: 'PodMonitor' }));
  });
});

describe('the flb-mesh chart on a real kube-apiserver', () => {
  let plane: ControlPlane;
  let helm: Helm;
  let core: CoreV1Api;
  let apps: AppsV1Api;
  let scratch: string;

  beforeAll(async () => {
    scratch = mkdtempSync(join(tmpdir(), 'flb-chart-test-'));
    plane = await startControlPlane();
    helm = new Helm(plane.kubeconfigPath);
    core = plane.kubeConfig.makeApiClient(CoreV1Api);
    apps = plane.kubeConfig.makeApiClient(AppsV1Api);
  });
  afterAll(async () => {
    helm?.dispose();
    await plane?.stop();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  const kubectl = (args: string[], input?: string) =>
    execa(testBinary('kubectl'), ['--kubeconfig', plane.kubeconfigPath, ...args], { reject: false, ...(input !== undefined ? { input } : {}) });

  it('accepts every rendered object in a server-side dry run with strict field validation', async () => {
    await core.createNamespace({ body: { metadata: { name: 'flomesh' } } });
    // A Kubernetes sink's namespace is the user's to make (README, Registry sinks).
    await core.createNamespace({ body: { metadata: { name: 'registry' } } });
    const valueSets = [
      {},
      {
        mesh: { interception: { mode: 'cni' }, dns: { domains: ['consul'] } },
        image: { registry: 'registry.example.com', tag: '1.2.3', pullSecrets: ['pull'] },
        vmCIDRs: ['10.20.0.0/16'],
        repo: { persistence: { storageClassName: 'fast' }, tls: { extraDnsNames: ['repo.example.com'], extraIpAddresses: ['10.20.0.5'] } },
        bridge: {
          extraVolumes: [{ name: 'consul-token', secret: { secretName: 'consul-token' } }],
          extraVolumeMounts: [{ name: 'consul-token', mountPath: '/etc/consul' }],
        },
        cni: { repair: 'label' },
        webhook: { failurePolicy: 'Ignore' },
      },
      sinkValues,
      // privileged with Bidirectional propagation, hostPID: what the API checks of the eBPF agent.
      { mesh: { interception: { mode: 'ebpf' } }, cni: { ebpf: { cgroup: '/sys/fs/cgroup/unified' } } },
      // ... and with the host's /sys/fs/cgroup, read-only with HostToContainer propagation (cgroup auto).
      { mesh: { interception: { mode: 'ebpf' } } },
    ];
    for (const values of valueSets) {
      const text = await helm.renderText(values);
      const count = YAML.parseAllDocuments(text).filter((d) => d.toJS() !== null).length;
      const applied = await kubectl(['apply', '--server-side', '--dry-run=server', '--validate=strict', '--field-manager=flb-chart-test', '-f', '-'], text);
      expect({ values, exitCode: applied.exitCode, stderr: applied.stderr }).toEqual({ values, exitCode: 0, stderr: '' });
      expect(applied.stdout.split('\n').filter((l) => l.endsWith('serverside-applied (server dry run)'))).toHaveLength(count);
    }
  });

  it('installs, and upgrades with a bumped version and changed values keeping the repo claim, the selectors, the CA and the caBundle', async () => {
    const install = await helm.run(['install', 'flb', CHART_DIR, '--namespace', 'flomesh', '--create-namespace']);
    expect({ exitCode: install.exitCode, stderr: install.stderr }).toEqual({ exitCode: 0, stderr: '' });
    const before = await apps.readNamespacedStatefulSet({ name: 'flb-repo', namespace: 'flomesh' });
    // The StatefulSet controller makes the claim with the pod, which waits for a node here.
    const claim = await eventually('the repo volume claim', () => core.readNamespacedPersistentVolumeClaim({ name: 'data-flb-repo-0', namespace: 'flomesh' }));
    const secretText = async (name: string, key: string) =>
      Buffer.from((await core.readNamespacedSecret({ name, namespace: 'flomesh' })).data![key]!, 'base64').toString();
    const caBefore = await secretText('flb-repo-ca', 'ca.crt');
    const servingBefore = await secretText('flb-repo-tls', 'tls.crt');
    // The running injector sets the caBundle; an upgrade must not take it away.
    const admission = plane.kubeConfig.makeApiClient(AdmissionregistrationV1Api);
    const bundle = Buffer.from(caBefore).toString('base64');
    const config = await admission.readMutatingWebhookConfiguration({ name: 'flb-sidecar-injector' });
    for (const webhook of config.webhooks ?? []) webhook.clientConfig.caBundle = bundle;
    await admission.replaceMutatingWebhookConfiguration({ name: 'flb-sidecar-injector', body: config });

    const bumped = join(scratch, 'flb-mesh');
    cpSync(CHART_DIR, bumped, { recursive: true });
    const chartFile = join(bumped, 'Chart.yaml');
    writeFileSync(
      chartFile,
      readFileSync(chartFile, 'utf8')
        .replace(/^version: .*$/m, 'version: 0.2.0')
        .replace(/^appVersion: .*$/m, 'appVersion: "0.2.0"'),
    );
    const changed = {
      bridge: { replicas: 3 },
      injector: { replicas: 3 },
      webhook: { timeoutSeconds: 5 },
      repo: { resources: { requests: { cpu: '200m', memory: '256Mi' }, limits: { memory: '1Gi' } }, tls: { extraDnsNames: ['repo.example.com'] } },
      mesh: { dns: { domains: ['consul'] } },
    };
    const upgrade = await helm.run(['upgrade', 'flb', bumped, '--namespace', 'flomesh', '-f', helm.valuesFile('changed', changed)]);
    expect({ exitCode: upgrade.exitCode, stderr: upgrade.stderr }).toEqual({ exitCode: 0, stderr: '' });

    const after = await apps.readNamespacedStatefulSet({ name: 'flb-repo', namespace: 'flomesh' });
    const identity = (s: V1StatefulSet) => ({
      uid: s.metadata?.uid,
      selector: s.spec?.selector,
      serviceName: s.spec?.serviceName,
      claims: s.spec?.volumeClaimTemplates?.map((t) => ({ name: t.metadata?.name, labels: t.metadata?.labels, spec: t.spec })),
    });
    expect(identity(after)).toEqual(identity(before));
    expect(after.spec?.template.spec?.containers[0]?.image).toBe('flomesh/flb-mesh-control-plane:0.2.0');
    expect(after.spec?.template.spec?.containers[0]?.resources?.limits).toEqual({ memory: '1Gi' });
    expect(after.metadata?.labels?.['helm.sh/chart']).toBe('flb-mesh-0.2.0');
    const claimAfter = await core.readNamespacedPersistentVolumeClaim({ name: 'data-flb-repo-0', namespace: 'flomesh' });
    expect(claimAfter.metadata?.uid).toBe(claim.metadata?.uid);
    for (const name of ['flb-bridge', 'flb-injector']) {
      expect((await apps.readNamespacedDeployment({ name, namespace: 'flomesh' })).spec?.replicas).toBe(3);
    }

    const upgraded = await admission.readMutatingWebhookConfiguration({ name: 'flb-sidecar-injector' });
    expect(upgraded.webhooks?.map((w) => [w.timeoutSeconds, w.clientConfig.caBundle])).toEqual([
      [5, bundle],
      [5, bundle],
    ]);
    // The CA stays (sidecars trust it); the serving certificate is issued again for its new name.
    expect(await secretText('flb-repo-ca', 'ca.crt')).toBe(caBefore);
    const servingAfter = await secretText('flb-repo-tls', 'tls.crt');
    expect(servingAfter).not.toBe(servingBefore);
    expect(new X509Certificate(servingAfter).subjectAltName).toContain('DNS:repo.example.com');
    expect(new X509Certificate(servingAfter).checkIssued(new X509Certificate(caBefore))).toBe(true);

    // The same upgrade again issues nothing, so the repo is not restarted for nothing.
    const again = await helm.run(['upgrade', 'flb', bumped, '--namespace', 'flomesh', '-f', helm.valuesFile('changed', changed)]);
    expect(again.exitCode).toBe(0);
    expect(await secretText('flb-repo-tls', 'tls.crt')).toBe(servingAfter);
    const unchanged = await apps.readNamespacedStatefulSet({ name: 'flb-repo', namespace: 'flomesh' });
    expect(unchanged.metadata?.generation).toBe(after.metadata?.generation);
  });

  it("refuses an upgrade that would change the repo's claim, naming the value, and changes nothing", async () => {
    const before = await apps.readNamespacedStatefulSet({ name: 'flb-repo', namespace: 'flomesh' });
    const history = await helm.run(['history', 'flb', '-n', 'flomesh', '-o', 'json']);
    const upgrade = await helm.run(['upgrade', 'flb', CHART_DIR, '-n', 'flomesh', '--reuse-values', '--set', 'repo.persistence.size=5Gi']);
    expect(upgrade.exitCode).toBe(1);
    expect(upgrade.stderr).toContain("repo.persistence.size: the repo's volume claim template cannot change on an upgrade (it is 1Gi, the values say 5Gi)");
    expect((await helm.run(['history', 'flb', '-n', 'flomesh', '-o', 'json'])).stdout).toBe(history.stdout);
    expect((await apps.readNamespacedStatefulSet({ name: 'flb-repo', namespace: 'flomesh' })).metadata?.resourceVersion).toBe(before.metadata?.resourceVersion);
  });

  it("fails an install whose Kubernetes sink's namespace does not exist, naming it, creating nothing", async () => {
    const values = helm.valuesFile('sink-missing', {
      bridge: { ...sinkValues.bridge, sinks: [{ kind: 'kubernetes', namespace: 'registry-missing', from: ['consul'] }] },
    });
    const install = await helm.run(['install', 'flb3', CHART_DIR, '--namespace', 'flomesh-3', '--create-namespace', '-f', values]);
    expect(install.exitCode).toBe(1);
    expect(install.stderr).toContain("bridge.sinks: the kubernetes sink's namespace registry-missing does not exist; create it first");
    const namespaces = (await core.listNamespace()).items.map((n) => n.metadata?.name);
    expect(namespaces).not.toContain('flomesh-3');
    expect(namespaces).not.toContain('registry-missing');
  });

  it('fails an install with a bad values file naming the field, creating nothing', async () => {
    const bad = helm.valuesFile('bad-install', { webhook: { failurePolicy: 'Never' }, repo: { persistence: { accessModes: ['ReadOnlyMany'] } } });
    const install = await helm.run(['install', 'flb2', CHART_DIR, '--namespace', 'flomesh-2', '--create-namespace', '-f', bad]);
    expect(install.exitCode).toBe(1);
    expect(install.stderr).toMatch(/\/webhook\/failurePolicy/);
    expect(install.stderr).toMatch(/\/repo\/persistence\/accessModes\/0/);
    const namespaces = await core.listNamespace();
    expect(namespaces.items.map((n) => n.metadata?.name)).not.toContain('flomesh-2');
  });
});
