/*
 * The Grafana dashboards the chart ships (charts/flb-mesh/dashboards/*.json): every PromQL query
 * parses, and every metric it names is one the code exports. The exported names are read from each
 * component's own registry, started here in-process as the component starts it, so renaming a
 * metric (or prefixing the process metrics) fails this test instead of leaving a panel empty.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parser } from '@prometheus-io/lezer-promql';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { CniAgentMetrics } from '../cni/metrics.js';
import { createLogger } from '../common/log.js';
import { exposedSeriesNames } from '../common/metrics.js';
import { InjectorMetrics } from '../injector/metrics.js';
import type { BridgeStatus } from '../registry-bridge/bridge.js';
import { createBridgeMetrics } from '../registry-bridge/metrics.js';
import { Repo } from '../repo/repo.js';
import { startRepoServer, type RepoServer } from '../repo/server.js';
import { DiskStore } from '../repo/store/disk.js';
import { DnsMetrics } from '../sidecar/dns/metrics.js';
import { SidecarMetrics } from '../sidecar/metrics.js';
import { find, Helm } from '../test-e2e/harness/chart.js';

const DASHBOARDS_DIR = fileURLToPath(new URL('../charts/flb-mesh/dashboards/', import.meta.url));

interface Query {
  dashboard: string;
  /** The panel's title, or the template variable's name. */
  where: string;
  expr: string;
}

interface Panel {
  title?: string;
  type?: string;
  datasource?: { uid?: string };
  targets?: { expr?: string }[];
  panels?: Panel[];
}
interface Dashboard {
  uid: string;
  title: string;
  panels: Panel[];
  templating?: { list: { name: string; type: string; query?: string | { query?: string } }[] };
}

function readDashboards(): Map<string, Dashboard> {
  const dashboards = new Map<string, Dashboard>();
  for (const file of readdirSync(DASHBOARDS_DIR)
    .filter((f) => f.endsWith('.json'))
    .sort())
    dashboards.set(file, JSON.parse(readFileSync(join(DASHBOARDS_DIR, file), 'utf8')) as Dashboard);
  return dashboards;
}

/** Every panel, those inside rows included. */
function* panelsOf(panels: Panel[]): Generator<Panel> {
  for (const panel of panels) {
    yield panel;
    if (panel.panels) yield* panelsOf(panel.panels);
  }
}

/**
 * The PromQL of a Prometheus template variable: `label_values(<selector>, label)` and
 * `query_result(<expr>)` hold one; `label_values(label)` and `metrics(...)` name no metric the
 * code could be checked against, so they are refused.
 */
function variableQuery(query: string): string {
  const labelValues = /^label_values\((.+),\s*\w+\)$/s.exec(query.trim());
  if (labelValues) return labelValues[1]!;
  const result = /^query_result\((.+)\)$/s.exec(query.trim());
  if (result) return result[1]!;
  throw new Error(`a variable query that names no metric: ${query}`);
}

function queriesOf(file: string, dashboard: Dashboard): Query[] {
  const queries: Query[] = [];
  for (const panel of panelsOf(dashboard.panels))
    for (const target of panel.targets ?? [])
      if (target.expr !== undefined) queries.push({ dashboard: file, where: panel.title ?? '(untitled)', expr: target.expr });
  for (const variable of dashboard.templating?.list ?? []) {
    if (variable.type !== 'query') continue;
    const query = typeof variable.query === 'string' ? variable.query : (variable.query?.query ?? '');
    queries.push({ dashboard: file, where: `variable $${variable.name}`, expr: variableQuery(query) });
  }
  return queries;
}

/**
 * Grafana's own interval variables become a duration (they stand where PromQL wants one); the
 * dashboard's variables are left as they are: they belong only inside label matcher strings, and
 * anywhere else they make the query unparseable, which fails.
 */
const withGrafanaIntervals = (expr: string) => expr.replace(/\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}/g, '5m');

/**
 * The dashboards' variables that pick one component's scrape targets: a selector matching on one
 * of them reads that component's metrics (the sidecars are told apart by their metrics port).
 */
const COMPONENT_VARIABLES: Record<string, string> = {
  $bridge_job: 'bridge',
  $repo_job: 'repo',
  $injector_job: 'injector',
  $cni_job: 'cni agent',
  $sidecar_port: 'sidecar',
};

interface Selected {
  name: string;
  /** The components whose targets the selector picks by a variable; none: any component. */
  components: string[];
}

/** The metrics a query selects, or the syntax errors that stop it parsing. */
function metricNames(expr: string): { names: string[]; selected: Selected[]; errors: string[] } {
  const text = withGrafanaIntervals(expr);
  const slice = (node: { from: number; to: number }) => text.slice(node.from, node.to);
  const selected: Selected[] = [];
  const errors: string[] = [];
  parser.parse(text).iterate({
    enter(ref) {
      if (ref.type.isError) errors.push(`syntax error at ${ref.from}: ${JSON.stringify(text.slice(Math.max(0, ref.from - 20), ref.to + 20))}`);
      if (ref.name !== 'VectorSelector') return;
      const identifier = ref.node.getChild('Identifier');
      let name = identifier ? slice(identifier) : undefined;
      const components = new Set<string>();
      for (const matcher of ref.node.getChild('LabelMatchers')?.getChildren('UnquotedLabelMatcher') ?? []) {
        const label = slice(matcher.getChild('LabelName')!);
        const value = matcher.getChild('StringLiteral');
        for (const [variable, component] of Object.entries(COMPONENT_VARIABLES)) if (value && slice(value).includes(variable)) components.add(component);
        if (label !== '__name__') continue;
        // {__name__="..."}: only an exact name can be checked.
        const op = matcher.getChild('MatchOp');
        if (op && slice(op) === '=' && value) name = JSON.parse(slice(value)) as string;
        else errors.push(`a __name__ matcher other than = cannot be checked: ${slice(matcher)}`);
      }
      if (name === undefined) errors.push(`a selector without a metric name: ${slice(ref)}`);
      else selected.push({ name, components: [...components] });
    },
  });
  return { names: selected.map((s) => s.name), selected, errors };
}

const emptyBridgeStatus: BridgeStatus = {
  identity: 'test',
  leader: true,
  leaseHolder: 'test',
  mesh: { name: 'flb', where: 'test' },
  catalog: { services: 0, sidecars: 0, rejected: 0, conflicts: 0 },
  sources: [],
  sinks: [],
};

/**
 * Labels Prometheus puts on every series from its scrape target (the ServiceMonitors' and
 * PodMonitor's relabelling, a pod-annotation scrape config), besides a metric's own.
 */
const TARGET_LABELS = ['job', 'instance', 'pod', 'namespace', 'service', 'container', 'endpoint'];

/**
 * Each series name a registry exposes with its label names, as a query names them (a histogram's
 * buckets have `le`). A metric without declared label names (the sidecar's hot-path families,
 * sidecar/series.ts) has the labels of the series it holds; undefined when it holds none: its
 * labels go unchecked.
 */
async function seriesLabels(registry: Registry): Promise<Map<string, Set<string> | undefined>> {
  const labels = new Map<string, Set<string> | undefined>();
  const declared = new Map((registry.getMetricsAsArray() as unknown as { name: string; labelNames?: string[] }[]).map((m) => [m.name, m.labelNames]));
  for (const metric of await registry.getMetricsAsJSON()) {
    const names = declared.get(metric.name);
    if (names) {
      const own = new Set(names);
      switch (String(metric.type)) {
        case 'histogram':
          labels.set(`${metric.name}_bucket`, new Set([...own, 'le']));
          labels.set(`${metric.name}_sum`, own);
          labels.set(`${metric.name}_count`, own);
          break;
        case 'summary':
          labels.set(metric.name, new Set([...own, 'quantile']));
          labels.set(`${metric.name}_sum`, own);
          labels.set(`${metric.name}_count`, own);
          break;
        default:
          labels.set(metric.name, own);
      }
      continue;
    }
    const seen = String(metric.type) === 'histogram' ? [`${metric.name}_bucket`, `${metric.name}_sum`, `${metric.name}_count`] : [metric.name];
    for (const name of seen) labels.set(name, undefined);
    for (const value of metric.values as { metricName?: string; labels: Record<string, unknown> }[]) {
      const name = value.metricName ?? metric.name;
      labels.set(name, new Set([...(labels.get(name) ?? []), ...Object.keys(value.labels)]));
    }
  }
  return labels;
}

/** Each component's registry, made as the component makes it. */
function componentRegistries(repoServer: RepoServer): [string, Registry][] {
  const sidecar = new SidecarMetrics();
  new DnsMetrics(sidecar.registry);
  // The per-service families hold series, with their labels, once a service is called: once each way.
  for (const direction of ['outbound', 'inbound'] as const)
    sidecar.for(direction, { id: 'orders.shop', name: 'orders', namespace: 'shop' }).response('http', 200, undefined);
  return [
    ['repo', repoServer.registry],
    ['bridge', createBridgeMetrics(() => emptyBridgeStatus).registry],
    ['injector', new InjectorMetrics().registry],
    ['sidecar', sidecar.registry],
    ['cni agent', new CniAgentMetrics().registry],
  ];
}

/**
 * Label names a query uses that its metrics do not have: in a selector's matchers, and in an
 * aggregation's `by (...)` (checked against every metric aggregated). Target labels are always
 * there; metrics whose labels are not known are skipped.
 */
function unknownLabels(expr: string, labelsOf: ReadonlyMap<string, Set<string> | undefined>): string[] {
  const text = withGrafanaIntervals(expr);
  const slice = (node: { from: number; to: number }) => text.slice(node.from, node.to);
  const problems: string[] = [];
  const allowed = (names: string[]): Set<string> | undefined => {
    const all = new Set([...TARGET_LABELS, '__name__']);
    for (const name of names) {
      const own = labelsOf.get(name);
      if (!own) return undefined;
      for (const label of own) all.add(label);
    }
    return all;
  };
  parser.parse(text).iterate({
    enter(ref) {
      const node = ref.node;
      if (node.name === 'VectorSelector') {
        const name = node.getChild('Identifier');
        const labels = name ? allowed([slice(name)]) : undefined;
        if (!labels) return;
        for (const matcher of node.getChild('LabelMatchers')?.getChildren('UnquotedLabelMatcher') ?? []) {
          const label = slice(matcher.getChild('LabelName')!);
          if (!labels.has(label)) problems.push(`${slice(name!)} has no label ${label}`);
        }
      } else if (node.name === 'AggregateExpr') {
        const by = node.getChild('AggregateModifier');
        if (!by?.getChild('By')) return;
        const names: string[] = [];
        node.toTree().iterate({
          enter(inner) {
            if (inner.name === 'VectorSelector') {
              const identifier = inner.node.getChild('Identifier');
              if (identifier) names.push(text.slice(node.from + identifier.from, node.from + identifier.to));
            }
          },
        });
        const labels = allowed(names);
        if (!labels) return;
        for (const label of by.getChild('GroupingLabels')?.getChildren('LabelName') ?? [])
          if (!labels.has(slice(label))) problems.push(`by (${slice(label)}): none of ${names.join(', ')} has it`);
      }
    },
  });
  return problems;
}

/**
 * The queries that name a metric its components do not export, as `dashboard / panel: problem`: a
 * selector that picks components by their variables must find the metric in each of them; any
 * other, in one component at least.
 */
function unbacked(queries: Query[], exported: ReadonlyMap<string, ReadonlySet<string>>): string[] {
  const anywhere = new Set([...exported.values()].flatMap((names) => [...names]));
  return queries.flatMap((q) =>
    metricNames(q.expr).selected.flatMap(({ name, components }) => {
      const missing = components.length
        ? components.filter((component) => !exported.get(component)?.has(name)).map((component) => `the ${component} does not export ${name}`)
        : anywhere.has(name)
          ? []
          : [`no component exports ${name}`];
      return missing.map((problem) => `${q.dashboard} / ${q.where}: ${problem}, in ${q.expr}`);
    }),
  );
}

describe('the Grafana dashboards in the chart', () => {
  const dashboards = readDashboards();
  const queries = [...dashboards].flatMap(([file, dashboard]) => queriesOf(file, dashboard));
  let work: string;
  let repoServer: RepoServer;
  let exported: Map<string, Set<string>>;
  const labelsOf = new Map<string, Set<string> | undefined>();
  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'flb-dashboards-'));
    const repo = await new Repo(await new DiskStore(work).init()).load();
    repoServer = await startRepoServer({ repo, host: '127.0.0.1', port: 0, log: createLogger('dashboards-test', 'silent') });
    exported = new Map();
    for (const [component, registry] of componentRegistries(repoServer)) {
      exported.set(component, await exposedSeriesNames(registry));
      for (const [name, labels] of await seriesLabels(registry)) labelsOf.set(name, labels);
    }
  });
  afterAll(async () => {
    await repoServer?.close();
    rmSync(work, { recursive: true, force: true });
  });

  it('are the mesh overview, service, sidecar resources and control plane dashboards, each with its own uid', () => {
    expect([...dashboards.keys()]).toEqual(['control-plane.json', 'mesh-overview.json', 'service.json', 'sidecar-resources.json']);
    const uids = [...dashboards.values()].map((d) => d.uid);
    expect(new Set(uids).size).toBe(uids.length);
  });

  it('query Prometheus through the data source variable, so they work with any data source name', () => {
    for (const [file, dashboard] of dashboards) {
      expect({ file, variables: dashboard.templating?.list.filter((v) => v.type === 'datasource').map((v) => v.name) }).toEqual({
        file,
        variables: ['datasource'],
      });
      for (const panel of panelsOf(dashboard.panels))
        if (panel.type !== 'row') expect({ file, panel: panel.title, uid: panel.datasource?.uid }).toEqual({ file, panel: panel.title, uid: '${datasource}' });
    }
  });

  it('hold queries that all parse as PromQL', () => {
    for (const [file] of dashboards) expect(queries.filter((q) => q.dashboard === file).length).toBeGreaterThan(5);
    expect(queries.flatMap((q) => metricNames(q.expr).errors.map((e) => `${q.dashboard} / ${q.where}: ${e}`))).toEqual([]);
  });

  it('name only metrics the code exports, each from the components whose targets it selects', () => {
    for (const q of queries) expect({ query: q.expr, names: metricNames(q.expr).names.length }).not.toEqual({ query: q.expr, names: 0 });
    expect(unbacked(queries, exported)).toEqual([]);
  });

  it('select and group by labels those metrics have', () => {
    expect(queries.flatMap((q) => unknownLabels(q.expr, labelsOf).map((problem) => `${q.dashboard} / ${q.where}: ${problem} in ${q.expr}`))).toEqual([]);
    // The check itself: a label no metric has is found, in a matcher and in a grouping.
    expect(unknownLabels('sum by (sourse) (rate(flb_bridge_source_errors_total{kind="consul", sink="x"}[5m]))', labelsOf)).toEqual([
      'by (sourse): none of flb_bridge_source_errors_total has it',
      'flb_bridge_source_errors_total has no label sink',
    ]);
    expect(unknownLabels('histogram_quantile(0.9, sum by (le, route) (rate(flb_repo_push_latency_seconds_bucket{job="r"}[5m])))', labelsOf)).toEqual([
      'by (route): none of flb_repo_push_latency_seconds_bucket has it',
    ]);
    // The sidecar's families too, from the series a call makes: code="5xx" was the label before response_code.
    expect(unknownLabels('sum by (le) (rate(flb_sidecar_request_duration_seconds_bucket{code="5xx", response_code="503"}[5m]))', labelsOf)).toEqual([
      'flb_sidecar_request_duration_seconds_bucket has no label code',
    ]);
  });

  it("fail a component whose process metrics are not under their standard names (the sidecar's were prefixed flb_sidecar_)", async () => {
    const prefixed = new Registry();
    collectDefaultMetrics({ register: prefixed, prefix: 'flb_sidecar_' });
    const withPrefixedSidecar = new Map(exported);
    withPrefixedSidecar.set(
      'sidecar',
      new Set([...(await exposedSeriesNames(prefixed)), ...[...exported.get('sidecar')!].filter((n) => n.startsWith('flb_'))]),
    );
    const problems = unbacked(queries, withPrefixedSidecar);
    expect(problems).toContainEqual(expect.stringMatching(/^sidecar-resources.json \/ CPU: the sidecar does not export process_cpu_seconds_total,/));
    expect(problems.every((p) => p.includes('the sidecar does not export'))).toBe(true);
  });
});

describe('the chart ships them for Grafana', () => {
  let helm: Helm;
  beforeAll(() => {
    helm = new Helm();
  });
  afterAll(() => helm?.dispose());

  it("as one ConfigMap each, labelled for Grafana's dashboard sidecar, when metrics.grafanaDashboards.enabled", async () => {
    const values = { metrics: { grafanaDashboards: { enabled: true, namespace: 'monitoring', annotations: { grafana_folder: 'flb-mesh' } } } };
    const objects = await helm.render(values);
    const files = readdirSync(DASHBOARDS_DIR).filter((f) => f.endsWith('.json'));
    expect(objects.filter((o) => o.kind === 'ConfigMap' && o.metadata.name.startsWith('flb-dashboard-')).length).toBe(files.length);
    for (const file of files) {
      const configMap = find(objects, 'ConfigMap', `flb-dashboard-${file.replace(/\.json$/, '')}`);
      expect(configMap.metadata.namespace).toBe('monitoring');
      expect(configMap.metadata.labels).toMatchObject({ grafana_dashboard: '1' });
      expect(configMap.metadata.annotations).toEqual({ grafana_folder: 'flb-mesh' });
      const data = configMap.data as Record<string, string>;
      expect(Object.keys(data)).toEqual([`flb-mesh-${file}`]);
      expect(JSON.parse(data[`flb-mesh-${file}`]!)).toEqual(JSON.parse(readFileSync(join(DASHBOARDS_DIR, file), 'utf8')));
    }
  });

  it('and not by default', async () => {
    expect((await helm.render()).filter((o) => o.metadata.name.startsWith('flb-dashboard-'))).toEqual([]);
  });
});
