import type { Operation } from 'fast-json-patch';
import { Base64JsonWriter, jsonText } from './json-text.js';

/** RFC 6901: `~` and `/` inside a key must be escaped in a JSON pointer. */
export function pointerKey(key: string): string {
  return key.replace(/~/g, '~0').replace(/\//g, '~1');
}

/**
 * Patch operations that set keys of a string map (labels, annotations) on an object that may
 * not have the map yet: `add` of the whole map when it is missing, one `add` per key otherwise
 * (`add` replaces an existing key, so it is right for both).
 */
export function setMapEntries(pathToMap: string, existing: Record<string, string> | undefined, entries: Record<string, string>): Operation[] {
  if (Object.keys(entries).length === 0) return [];
  if (existing === undefined) return [{ op: 'add', path: pathToMap, value: { ...entries } }];
  return Object.entries(entries).map(([key, value]) => ({ op: 'add', path: `${pathToMap}/${pointerKey(key)}`, value }));
}

/** Inserts `items` at `index` of an array that may be missing (index 0 then creates it). */
export function insertIntoArray(pathToArray: string, existing: readonly unknown[] | undefined, index: number, items: unknown[]): Operation[] {
  if (items.length === 0) return [];
  if (existing === undefined) return [{ op: 'add', path: pathToArray, value: items }];
  // Adding each at index+i keeps their order ahead of what was at `index`.
  return items.map((value, i) => ({ op: 'add', path: `${pathToArray}/${index + i}`, value }));
}

export function appendToArray(pathToArray: string, existing: readonly unknown[] | undefined, items: unknown[]): Operation[] {
  if (items.length === 0) return [];
  if (existing === undefined) return [{ op: 'add', path: pathToArray, value: items }];
  return items.map((value) => ({ op: 'add', path: `${pathToArray}/-`, value }));
}

/**
 * The patch as JSON text, exactly as JSON.stringify(patch) writes it, taking remembered text for
 * operations' values (json-text.ts): the shape of the webhook's answer.
 */
export function patchJson(patch: readonly Operation[]): string {
  let out = '[';
  for (let i = 0; i < patch.length; i++) out += (i ? ',' : '') + operationJson(patch[i]!);
  return `${out}]`;
}

const OUR_SHAPE = ['op', 'path', 'value'];

function operationJson(operation: Operation): string {
  if (!isOurShape(operation)) return fieldByField(operation);
  const { op, path, value } = operation as { op: string; path: string; value: unknown };
  return `{"op":${JSON.stringify(op)},"path":${JSON.stringify(path)},"value":${jsonText(value)}}`;
}

/**
 * The operations injectPod makes are {op, path, value} in that order, and are written directly.
 * Any other shape goes field by field, as JSON.stringify would (Object.entries cost a third of the time).
 */
function isOurShape(operation: Operation): boolean {
  let n = 0;
  for (const key in operation) {
    if (key !== OUR_SHAPE[n++]) return false;
  }
  return n === 3 && (operation as { value?: unknown }).value !== undefined;
}

function fieldByField(operation: Operation): string {
  const fields: string[] = [];
  for (const [key, value] of Object.entries(operation)) {
    if (value === undefined) continue;
    fields.push(`${JSON.stringify(key)}:${key === 'value' ? jsonText(value) : JSON.stringify(value)}`);
  }
  return `{${fields.join(',')}}`;
}

/**
 * The patch in base64, as the AdmissionReview answer carries it: the JSON of patchJson() but for
 * spaces between tokens, with the remembered parts' base64 made once (json-text.ts).
 */
export function patchBase64(patch: readonly Operation[]): string {
  const writer = new Base64JsonWriter();
  writer.text('[');
  for (let i = 0; i < patch.length; i++) {
    const operation = patch[i]!;
    if (i) writer.text(',');
    if (!isOurShape(operation)) {
      writer.text(fieldByField(operation));
      continue;
    }
    const { op, path, value } = operation as { op: string; path: string; value: unknown };
    writer.text(`{"op":${JSON.stringify(op)},"path":${JSON.stringify(path)},"value":`);
    writer.value(value);
    writer.text('}');
  }
  writer.text(']');
  return writer.finish();
}
