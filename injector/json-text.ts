// JSON text of the webhook's answers without serialising the same parts for every pod. Most of a
// patch (the init container, the volumes, nearly all of the sidecar container) is the same for
// every pod of a mesh; JSON.stringify of it, and of the answer around the base64 patch, was a
// third of the webhook's CPU per review (bench/webhook.ts). Parts that never change are serialised
// once and their text remembered beside them; the sidecar container is a template whose few
// per-pod values are spliced into text serialised once.
//
// The text is always what JSON.stringify would write for the same value, byte for byte (the tests
// compare both for every injection fixture and every fuzzed review), so the answer does not depend
// on whether a part came from a cache.

const remembered = new WeakMap<object, string>();

/**
 * Remembers `text` as the JSON of `value` and returns `value`. The value must not change afterwards:
 * callers freeze it (shared parts) or build it fresh and hand it only to the patch.
 */
export function rememberJson<T extends object>(value: T, text: string = JSON.stringify(value)): T {
  remembered.set(value, text);
  return value;
}

/** JSON.stringify(value), taking remembered text for the value or for the items of an array. */
export function jsonText(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  const known = remembered.get(value);
  if (known !== undefined) return known;
  if (Array.isArray(value)) {
    // Concatenated, not joined: join would copy the remembered texts into one new string, which
    // the answer's base64 copies once more.
    let out = '[';
    for (let i = 0; i < value.length; i++) {
      const item: unknown = value[i];
      // JSON.stringify writes null for array items it cannot represent.
      out += (i ? ',' : '') + (item === undefined || typeof item === 'function' || typeof item === 'symbol' ? 'null' : jsonText(item));
    }
    return `${out}]`;
  }
  return JSON.stringify(value);
}

/** Freezes a value and everything in it: a part shared by every pod's patch must never change. */
export function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}

const HOLE = '\u0000flb-json-hole:';

/**
 * A value whose JSON is fixed but for a few string- or object-valued holes: serialised once, then
 * rendered by splicing the holes' JSON text between the fixed pieces.
 */
export class JsonTemplate<Hole extends string> {
  private readonly pieces: string[] = [];
  private readonly order: Hole[] = [];

  /** A placeholder to put where a hole's value goes, in the value given to the constructor. */
  static hole<H extends string>(name: H): string {
    return `${HOLE}${name}\u0000`;
  }

  constructor(value: unknown, holes: readonly Hole[]) {
    const text = JSON.stringify(value);
    const where = holes
      .map((name) => ({ name, quoted: JSON.stringify(JsonTemplate.hole(name)), at: text.indexOf(JSON.stringify(JsonTemplate.hole(name))) }))
      .sort((a, b) => a.at - b.at);
    for (const { name, quoted, at } of where) {
      if (at < 0 || text.indexOf(quoted, at + 1) >= 0) throw new Error(`JSON template: hole ${name} must appear exactly once`);
    }
    let from = 0;
    for (const { name, quoted, at } of where) {
      this.pieces.push(text.slice(from, at));
      this.order.push(name);
      from = at + quoted.length;
    }
    this.pieces.push(text.slice(from));
  }

  /** The JSON text with each hole replaced by the JSON text given for it. */
  render(holes: Record<Hole, string>): string {
    let out = this.pieces[0]!;
    for (let i = 0; i < this.order.length; i++) out += holes[this.order[i]!] + this.pieces[i + 1]!;
    return out;
  }
}
