// The Helm chart (charts/flb-mesh) for the tests: helm built from its Go module (scripts/setup.sh),
// run with its own folders so no user's helm configuration or cache takes part; rendering into
// objects; and the parts of values.schema.json that come from the contract.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import YAML from 'yaml';
import { z } from 'zod';
import { BridgeConfigSchema, MeshSchema } from '../../common/contract/index.js';
import { CHECKOUT } from '../../devenv/node-simulator/images.js';
import { testBinary } from '../../devenv/cache.js';

export const CHART_DIR = join(CHECKOUT, 'charts/flb-mesh');
export const VALUES_SCHEMA_FILE = join(CHART_DIR, 'values.schema.json');

export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [field: string]: unknown;
}

export interface HelmResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** Runs helm with folders of its own; `kubeconfig` for commands that talk to a cluster. */
export class Helm {
  private readonly home = mkdtempSync(join(tmpdir(), 'flb-helm-'));

  constructor(private readonly kubeconfig?: string) {}

  async run(args: string[], input?: string): Promise<HelmResult> {
    const result = await execa(testBinary('helm'), args, {
      reject: false,
      ...(input !== undefined ? { input } : {}),
      env: {
        // Without HOME, client-go puts its discovery cache in ./.kube/cache: the checkout.
        HOME: this.home,
        HELM_CACHE_HOME: join(this.home, 'cache'),
        HELM_CONFIG_HOME: join(this.home, 'config'),
        HELM_DATA_HOME: join(this.home, 'data'),
        ...(this.kubeconfig ? { KUBECONFIG: this.kubeconfig } : {}),
      },
      extendEnv: false,
    });
    return { exitCode: result.exitCode ?? 1, stdout: String(result.stdout), stderr: String(result.stderr) };
  }

  /** A values file in helm's folder, for -f. */
  valuesFile(name: string, values: unknown): string {
    const path = join(this.home, `${name}.yaml`);
    writeFileSync(path, YAML.stringify(values));
    return path;
  }

  /** `helm template` of the chart with these values; throws with helm's message when it fails. */
  async render(values: unknown = {}, options: { namespace?: string; chart?: string; release?: string } = {}): Promise<KubeObject[]> {
    const text = await this.renderText(values, options);
    return YAML.parseAllDocuments(text)
      .map((doc) => doc.toJS() as KubeObject | null)
      .filter((o): o is KubeObject => o !== null);
  }

  async renderText(values: unknown = {}, options: { namespace?: string; chart?: string; release?: string } = {}): Promise<string> {
    const result = await this.run([
      'template',
      options.release ?? 'flb',
      options.chart ?? CHART_DIR,
      '--namespace',
      options.namespace ?? 'flomesh',
      '-f',
      this.valuesFile('render', values),
    ]);
    if (result.exitCode !== 0) throw new Error(`helm template failed: ${result.stderr}`);
    return result.stdout;
  }

  dispose(): void {
    rmSync(this.home, { recursive: true, force: true });
  }
}

export const find = (objects: KubeObject[], kind: string, name: string): KubeObject => {
  const found = objects.find((o) => o.kind === kind && o.metadata.name === name);
  if (!found) throw new Error(`no ${kind} ${name} among ${objects.map((o) => `${o.kind}/${o.metadata.name}`).join(', ')}`);
  return found;
};

type JsonSchema = { [key: string]: unknown };
const isObject = (value: unknown): value is JsonSchema => typeof value === 'object' && value !== null && !Array.isArray(value);

/** A minimal document of `schema` with `value` at `path` (properties only): does the contract take it? */
function contractTakes(schema: z.ZodType, base: Record<string, unknown>, path: string[], value: unknown): boolean {
  const document = structuredClone(base);
  let at: Record<string, unknown> = document;
  for (const key of path.slice(0, -1)) at = (at[key] ??= {}) as Record<string, unknown>;
  at[path.at(-1)!] = value;
  return schema.safeParse(document).success;
}

/**
 * Makes a generated schema fit for values: typos fail (objects take no other properties), and enum
 * values the contract reserves but refuses (mTLS modes not built yet), or that the chart cannot
 * deploy (NOT_DEPLOYED_BY_THE_CHART), are left out, so helm refuses them at install instead of the
 * running bridge and injector.
 */
function tighten(node: unknown, check: ((path: string[], value: unknown) => boolean) | undefined, path: string[]): void {
  if (Array.isArray(node)) {
    for (const item of node) tighten(item, undefined, path);
    return;
  }
  if (!isObject(node)) return;
  if (isObject(node.properties) && node.additionalProperties === undefined) node.additionalProperties = false;
  if (check && Array.isArray(node.enum)) node.enum = node.enum.filter((value) => check(path, value));
  for (const [key, child] of Object.entries(node)) {
    if (key === 'properties' && isObject(child)) {
      for (const [name, property] of Object.entries(child)) tighten(property, check, [...path, name]);
    } else if (key !== 'enum' && key !== 'default' && key !== 'const') {
      tighten(child, undefined, path);
    }
  }
}

/**
 * Mesh choices the contract takes but this chart cannot deploy yet, and why (added to the field's
 * description in values.schema.json). None now: eBPF mode, the last, runs with the node agent's
 * DaemonSet given bpffs, the host's cgroup v2 hierarchy and PIDs (templates/cni.yaml).
 */
const NOT_DEPLOYED_BY_THE_CHART: Record<string, { values: unknown[]; why: string }> = {};

const toJsonSchema = (schema: z.ZodType) => z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any', target: 'draft-2020-12' }) as JsonSchema;

/**
 * values.mesh: the contract's Mesh without what the chart sets (apiVersion, kind, the control
 * plane's namespace, the repo). values.bridge.sources: the BridgeConfig's sources.
 * values.bridge.sinks: its sinks but the repo sink, which the chart always configures itself.
 */
export function contractValuesSchemas(): { mesh: JsonSchema; sources: JsonSchema; sinks: JsonSchema } {
  const mesh = toJsonSchema(MeshSchema);
  const chartOwned = ['apiVersion', 'kind', 'controlPlaneNamespace', 'repo'];
  for (const key of ['$schema', 'title']) delete mesh[key];
  mesh.description = 'Mesh settings (mesh.json, common/contract/mesh.ts); the chart sets apiVersion, kind, controlPlaneNamespace and repo';
  const properties = mesh.properties as Record<string, unknown>;
  for (const key of chartOwned) delete properties[key];
  mesh.required = (mesh.required as string[]).filter((key) => !chartOwned.includes(key));
  const meshBase = { apiVersion: 'flb.flomesh.io/v1alpha1', kind: 'Mesh', name: 'flb' };
  const deployable = (path: string[], value: unknown) => !NOT_DEPLOYED_BY_THE_CHART[path.join('.')]?.values.includes(value);
  tighten(mesh, (path, value) => contractTakes(MeshSchema, meshBase, path, value) && deployable(path, value), []);
  for (const [path, { why }] of Object.entries(NOT_DEPLOYED_BY_THE_CHART)) {
    let field = mesh;
    for (const key of path.split('.')) field = (field.properties as Record<string, JsonSchema>)[key]!;
    field.description = `${String(field.description)}. In this chart: ${why}`;
  }

  const bridge = toJsonSchema(BridgeConfigSchema);
  const sources = (bridge.properties as Record<string, JsonSchema>).sources!;
  sources.description = 'BridgeConfig sources (common/contract/bridge.ts)';
  tighten(sources, undefined, []);

  const sinks = (bridge.properties as Record<string, JsonSchema>).sinks!;
  sinks.description = 'BridgeConfig registry sinks (common/contract/bridge.ts), after the repo sink the chart configures';
  // The BridgeConfig needs a sink; the chart's repo sink is always there, so none more is fine.
  delete sinks.minItems;
  const kinds = sinks.items as JsonSchema;
  const union = (kinds.oneOf ?? kinds.anyOf) as JsonSchema[];
  const isRepo = (kind: JsonSchema) => ((kind.properties as Record<string, JsonSchema>).kind!.const ?? '') === 'repo';
  if (union.filter(isRepo).length !== 1) throw new Error("the contract's sinks changed shape: no single repo kind to leave out");
  kinds[kinds.oneOf ? 'oneOf' : 'anyOf'] = union.filter((kind) => !isRepo(kind));
  tighten(sinks, undefined, []);
  return { mesh, sources, sinks };
}

/** values.schema.json with its contract parts as the contract has them now. */
export function valuesSchemaWithContract(): string {
  const schema = JSON.parse(readFileSync(VALUES_SCHEMA_FILE, 'utf8')) as { properties: Record<string, JsonSchema> };
  const { mesh, sources, sinks } = contractValuesSchemas();
  schema.properties.mesh = mesh;
  const bridge = schema.properties.bridge!.properties as Record<string, unknown>;
  bridge.sources = sources;
  // sinks right after sources, as values.yaml has them (a new key would go last).
  const ordered = Object.entries(bridge).filter(([key]) => key !== 'sinks');
  ordered.splice(ordered.findIndex(([key]) => key === 'sources') + 1, 0, ['sinks', sinks]);
  schema.properties.bridge!.properties = Object.fromEntries(ordered);
  return `${JSON.stringify(schema, null, 2)}\n`;
}
