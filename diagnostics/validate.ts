/*
 * `flb validate`: every contract document in some text (YAML or JSON, one or more documents),
 * checked by the contract's own schemas, every problem named by its field and, where the text
 * says, its line. Pure: the runner reads the files.
 */
import YAML, { LineCounter } from 'yaml';
import type { z } from 'zod';
import {
  API_VERSION,
  BridgeConfigSchema,
  InterceptionSchema,
  MeshSchema,
  ServiceSchema,
  SidecarConfigSchema,
  formatPath,
  issuesOf,
  serviceSchemaFor,
  type Mesh,
} from '../common/contract/index.js';

export const UNDERSTOOD_KINDS = [
  `Mesh (mesh.json, the flb-mesh ConfigMap's mesh.yaml)`,
  `Service (a catalog file, services/<id>.json)`,
  `Sidecar (sidecar.json)`,
  `BridgeConfig (flb bridge run --config)`,
  `interception settings (the ${'flomesh.io/interception'} annotation: version: 1, mode)`,
  `a ConfigMap holding any of these in its data (such as flb-mesh's mesh.yaml)`,
] as const;

const UNDERSTOOD = `flb validate understands: ${UNDERSTOOD_KINDS.join('; ')}. Documents other than the interception settings carry apiVersion: ${API_VERSION} and their kind`;

export interface Problem {
  /** The field's path, as the contract names it (`endpoints[1].port`), or `(document)`. */
  field: string;
  message: string;
  /** 1-based, when the text locates it. */
  line?: number;
}

export interface DocumentResult {
  source: string;
  /** 1-based position of the document in its source (multi-document YAML). */
  document: number;
  /** Where it starts (1-based line). */
  line: number;
  /** What it was read as; undefined when it is no document flb knows. */
  kind?: string;
  /** Its name or id, when it has one. */
  name?: string;
  problems: Problem[];
}

interface ParsedDocument {
  source: string;
  document: number;
  line: number;
  data: unknown;
  /** The line of a path inside this document, or of the nearest of its parents the text has. */
  lineOf(path: readonly PropertyKey[]): number | undefined;
  parseErrors: Problem[];
  /** For a document embedded in a ConfigMap: where its path starts. */
  prefix?: string;
}

type Kind = 'Mesh' | 'Service' | 'Sidecar' | 'BridgeConfig' | 'interception';

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);

function kindOf(data: unknown): Kind | undefined {
  if (!isObject(data)) return undefined;
  if (data.kind === 'Mesh' || data.kind === 'Service' || data.kind === 'Sidecar' || data.kind === 'BridgeConfig') return data.kind;
  if (data.kind === undefined && data.apiVersion === undefined && 'version' in data && 'mode' in data) return 'interception';
  return undefined;
}

function nameOf(data: unknown): string | undefined {
  if (!isObject(data)) return undefined;
  for (const key of ['id', 'name'] as const) if (typeof data[key] === 'string') return data[key];
  const metadata = data.metadata;
  if (isObject(metadata) && typeof metadata.name === 'string')
    return typeof metadata.namespace === 'string' ? `${metadata.namespace}/${metadata.name}` : metadata.name;
  return undefined;
}

/** Where a node of the text starts, as a line (1-based). */
const lineAt = (node: unknown, lineCounter: LineCounter): number | undefined =>
  YAML.isNode(node) && node.range ? lineCounter.linePos(node.range[0]).line : undefined;

/**
 * The line of a field: its key's line in a mapping, its item's in a sequence; for a field the text
 * lacks (a required one), the line of the nearest parent it has.
 */
function lineOfPath(root: unknown, path: readonly PropertyKey[], start: number, lineCounter: LineCounter): number {
  let node: unknown = root;
  let line = start;
  for (const segment of path) {
    if (YAML.isMap(node)) {
      const pair = node.items.find((item) => (YAML.isScalar(item.key) ? item.key.value : item.key) === segment);
      if (!pair) break;
      line = lineAt(pair.key, lineCounter) ?? line;
      node = pair.value;
    } else if (YAML.isSeq(node) && typeof segment === 'number') {
      const item: unknown = node.items[segment];
      if (item === undefined) break;
      line = lineAt(item, lineCounter) ?? line;
      node = item;
    } else break;
  }
  return line;
}

/** Every YAML or JSON document in `text`; empty documents (a trailing `---`) are left out. */
export function parseDocuments(source: string, text: string): ParsedDocument[] {
  const lineCounter = new LineCounter();
  const documents = YAML.parseAllDocuments(text, { lineCounter, uniqueKeys: true });
  const parsed: ParsedDocument[] = [];
  let index = 0;
  for (const doc of Array.isArray(documents) ? documents : [documents]) {
    index++;
    const contents = doc.contents as { range?: [number, number, number] } | null;
    const start = lineCounter.linePos((contents?.range ?? doc.range)[0]).line;
    const parseErrors = doc.errors.map((e) => ({
      field: '(document)',
      message: `not YAML or JSON: ${e.message.split('\n')[0]!}`,
      line: e.linePos?.[0]?.line ?? start,
    }));
    let data: unknown;
    if (!parseErrors.length) {
      try {
        data = doc.toJS({ maxAliasCount: 100 });
      } catch (error) {
        parseErrors.push({ field: '(document)', message: `not YAML or JSON: ${(error as Error).message}`, line: start });
      }
    }
    if (!parseErrors.length && (data === null || data === undefined)) continue;
    parsed.push({ source, document: index, line: start, data, parseErrors, lineOf: (path) => lineOfPath(doc.contents, path, start, lineCounter) });
  }
  return parsed;
}

/** Schemas by kind; services are checked against the mesh's VIP ranges when a mesh is among the inputs. */
function schemaFor(kind: Kind, mesh: Mesh | undefined): z.ZodType {
  switch (kind) {
    case 'Mesh':
      return MeshSchema;
    case 'Service':
      return mesh ? serviceSchemaFor(mesh) : ServiceSchema;
    case 'Sidecar':
      return SidecarConfigSchema;
    case 'BridgeConfig':
      return BridgeConfigSchema;
    case 'interception':
      return InterceptionSchema;
  }
}

function checkAgainst(doc: ParsedDocument, kind: Kind, mesh: Mesh | undefined): Problem[] {
  const result = schemaFor(kind, mesh).safeParse(doc.data);
  if (result.success) return [];
  const named = issuesOf(result.error);
  return result.error.issues.map((issue, i) => {
    const line = doc.lineOf(issue.path as PropertyKey[]);
    const field = doc.prefix ? `${doc.prefix}${issue.path.length ? `.${formatPath(issue.path as PropertyKey[])}` : ''}` : named[i]!.field;
    return { field, message: named[i]!.message, ...(line !== undefined ? { line } : {}) };
  });
}

/** The documents inside a ConfigMap's data: values that parse as documents flb knows. */
function embedded(doc: ParsedDocument): { key: string; docs: ParsedDocument[]; line?: number }[] {
  const data = isObject(doc.data) && doc.data.kind === 'ConfigMap' && isObject(doc.data.data) ? doc.data.data : {};
  const found: { key: string; docs: ParsedDocument[]; line?: number }[] = [];
  for (const [key, value] of Object.entries(data)) {
    if (typeof value !== 'string') continue;
    const line = doc.lineOf(['data', key]);
    const named = /\.(ya?ml|json)$/.test(key);
    let docs: ParsedDocument[];
    try {
      docs = parseDocuments(`${doc.source}`, value);
    } catch {
      continue;
    }
    // A key named like a document file is read as one; any other only when it holds a kind flb knows.
    if (!named && !docs.some((d) => kindOf(d.data))) continue;
    found.push({
      key,
      line,
      docs: docs.map((d) => ({
        ...d,
        prefix: `data[${JSON.stringify(key)}]`,
        // Lines inside a block scalar start on the line after its key.
        lineOf: (path) => {
          const inner = d.lineOf(path);
          return inner !== undefined && line !== undefined ? line + inner : line;
        },
      })),
    });
  }
  return found;
}

/**
 * Checks every document of every source. A Mesh among them (the first valid one) gives the VIP
 * ranges the services are checked against, as the sidecars would check them.
 */
export function validateSources(sources: readonly { name: string; text: string }[]): DocumentResult[] {
  const documents = sources.flatMap((s) => {
    if (!s.text.trim())
      return [
        {
          source: s.name,
          document: 1,
          line: 1,
          data: undefined,
          parseErrors: [{ field: '(document)', message: 'empty: no document' }],
          lineOf: () => undefined,
        } as ParsedDocument,
      ];
    return parseDocuments(s.name, s.text);
  });
  const everyDocument = documents.flatMap((d) => [d, ...embedded(d).flatMap((e) => e.docs)]);
  const mesh = everyDocument
    .filter((d) => kindOf(d.data) === 'Mesh')
    .map((d) => MeshSchema.safeParse(d.data))
    .find((r) => r.success)?.data;

  return documents.map((doc): DocumentResult => {
    const base = { source: doc.source, document: doc.document, line: doc.line };
    if (doc.parseErrors.length) return { ...base, problems: doc.parseErrors };
    const kind = kindOf(doc.data);
    const name = nameOf(doc.data);
    if (kind) return { ...base, kind, ...(name ? { name } : {}), problems: checkAgainst(doc, kind, mesh) };
    const isConfigMap = isObject(doc.data) && doc.data.kind === 'ConfigMap';
    const inside = isConfigMap ? embedded(doc) : [];
    if (isConfigMap && inside.length) {
      const problems = inside.flatMap(({ key, docs, line }) =>
        docs.flatMap((inner) => {
          if (inner.parseErrors.length)
            return inner.parseErrors.map((p) => ({
              field: `data[${JSON.stringify(key)}]`,
              message: p.message,
              ...(line ? { line } : {}),
            }));
          const innerKind = kindOf(inner.data);
          if (!innerKind)
            return [
              {
                field: `data[${JSON.stringify(key)}]`,
                message: `holds no document flb knows (kind: ${describeKind(inner.data)}); ${UNDERSTOOD}`,
                ...(line ? { line } : {}),
              },
            ];
          return checkAgainst(inner, innerKind, mesh);
        }),
      );
      const kinds = [...new Set(inside.flatMap((e) => e.docs.map((d) => kindOf(d.data)).filter(Boolean)))].join(', ');
      return { ...base, kind: `ConfigMap${kinds ? ` (${kinds})` : ''}`, ...(name ? { name } : {}), problems };
    }
    return {
      ...base,
      ...(name ? { name } : {}),
      problems: [{ field: '(document)', message: `not a contract document (kind: ${describeKind(doc.data)}); ${UNDERSTOOD}`, line: doc.line }],
    };
  });
}

function describeKind(data: unknown): string {
  if (!isObject(data)) return Array.isArray(data) ? 'none, a list' : `none, a ${data === null ? 'null' : typeof data}`;
  if (typeof data.kind === 'string') return typeof data.apiVersion === 'string' ? `${data.kind}, apiVersion ${data.apiVersion}` : data.kind;
  return 'none';
}

/** `file:line: Kind name: field: problem`, one line per problem, as compilers write them. */
export function renderValidation(results: readonly DocumentResult[]): string {
  const lines: string[] = [];
  for (const r of results) {
    const what = [r.kind ?? 'document', r.name].filter(Boolean).join(' ');
    const where = (line?: number) => `${r.source}${line ? `:${line}` : ''}`;
    if (!r.problems.length) lines.push(`${where(r.line)}: ${what}: valid`);
    for (const p of r.problems) lines.push(`${where(p.line)}: ${what}: ${p.field === '(document)' ? '' : `${p.field}: `}${p.message}`);
  }
  const bad = results.filter((r) => r.problems.length);
  const problems = bad.reduce((n, r) => n + r.problems.length, 0);
  lines.push(
    bad.length
      ? `${results.length} document${results.length === 1 ? '' : 's'}: ${results.length - bad.length} valid, ${bad.length} with ${problems} problem${problems === 1 ? '' : 's'}`
      : `${results.length} document${results.length === 1 ? '' : 's'}, all valid`,
  );
  return `${lines.join('\n')}\n`;
}
