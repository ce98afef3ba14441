// JSON text of the webhook's answers without serialising, or base64-encoding, the same parts for
// every pod. Most of a patch (the init container, the volumes, nearly all of the sidecar container)
// is the same for every pod of a mesh; JSON.stringify of it, and of the answer around the base64
// patch, was a third of the webhook's CPU per review (bench/webhook.ts). Parts that never change
// are serialised once and their text remembered beside them; the sidecar container is a template
// whose few per-pod values are spliced between pieces serialised once.
//
// The patch goes to the apiserver in base64, and base64 of a text is the base64 of its pieces put
// end to end when every piece but the last is a whole number of 3-byte groups. So each piece also
// keeps its own base64, made once, of its text padded with spaces to such a length (JSON allows
// whitespace between tokens, and pieces begin and end between tokens); only the per-pod text in
// between is encoded per review. That saves encoding, and the 5 KiB flat copy of the patch text
// that encoding it whole needed, for every pod.
//
// jsonText() is always what JSON.stringify would write for the same value, byte for byte; the
// base64 patch decodes to it but for spaces between tokens (the tests compare both for every
// injection fixture and every fuzzed review).

/** JSON text known in advance, and its base64 once asked for. */
export class Piece {
  private encoded: string | undefined;
  constructor(readonly text: string) {}

  /** The text padded with spaces to a whole number of 3-byte groups, in base64 (no `=` padding). */
  get base64(): string {
    this.encoded ??= Buffer.from(padToGroups(this.text)).toString('base64');
    return this.encoded;
  }
}

function padToGroups(text: string): string {
  const extra = (3 - (Buffer.byteLength(text) % 3)) % 3;
  return extra ? text + '  '.slice(0, extra) : text;
}

/** A value's JSON as pieces made in advance and per-value text between them. */
type Fragment = readonly (Piece | string)[];

/**
 * A value's JSON is remembered on the value itself, under this symbol, not enumerable: JSON.stringify,
 * spreads, structuredClone and YAML dumps never see it, and a copy (which may then be changed) does
 * not carry it. Not in a WeakMap: every review remembers its answer and its pod's sidecar for a few
 * microseconds, and a WeakMap entry per review made every young-generation collection of the
 * webhook 5 to 10 times longer (the table of weak entries is walked at each one, and its dead
 * entries wait for a full collection): those pauses set its p99.
 */
const JSON_TEXT = Symbol('flb-mesh JSON text');

type Remembered = { readonly [JSON_TEXT]?: Fragment };

function remembered(value: object): Fragment | undefined {
  const known = (value as Remembered)[JSON_TEXT];
  // Only the value's own: an object made with a remembered value as its prototype has other JSON.
  return known !== undefined && Object.hasOwn(value, JSON_TEXT) ? known : undefined;
}

/**
 * Remembers `text` as the JSON of `value` and returns `value`. The value must not change afterwards:
 * callers freeze it after this (shared parts) or build it fresh and hand it only to the patch.
 */
export function rememberJson<T extends object>(value: T, text: string = JSON.stringify(value)): T {
  return rememberFragment(value, [new Piece(text)]);
}

function rememberFragment<T extends object>(value: T, fragment: Fragment): T {
  if (!Object.isExtensible(value)) throw new TypeError('JSON text can only be remembered for a value before it is frozen');
  Object.defineProperty(value, JSON_TEXT, { value: fragment });
  return value;
}

/** JSON.stringify(value), taking remembered text for the value or for the items of an array. */
export function jsonText(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  const known = remembered(value);
  if (known !== undefined) {
    let out = '';
    for (const part of known) out += typeof part === 'string' ? part : part.text;
    return out;
  }
  if (Array.isArray(value)) {
    // Concatenated, not joined: join would copy the remembered texts into one new string.
    let out = '[';
    for (let i = 0; i < value.length; i++) out += (i ? ',' : '') + itemText(value[i]);
    return `${out}]`;
  }
  return JSON.stringify(value);
}

/** JSON.stringify writes null for array items it cannot represent. */
function itemText(item: unknown): string {
  return item === undefined || typeof item === 'function' || typeof item === 'symbol' ? 'null' : jsonText(item);
}

/** Pieces shorter than this are copied into the text around them: a base64 chunk of their own would cost more than it saves. */
const MIN_ENCODED_PIECE = 64;

/** Writes JSON in base64, taking the remembered pieces' own base64 and encoding only the text between them. */
export class Base64JsonWriter {
  private out = '';
  private pending = '';

  text(json: string): void {
    this.pending += json;
  }

  value(value: unknown): void {
    if (value === null || typeof value !== 'object') return this.text(JSON.stringify(value));
    const known = remembered(value);
    if (known !== undefined) {
      for (const part of known) {
        if (typeof part === 'string') this.text(part);
        else if (part.text.length < MIN_ENCODED_PIECE) this.text(part.text);
        else {
          this.flush(true);
          this.out += part.base64;
        }
      }
      return;
    }
    if (!Array.isArray(value)) return this.text(JSON.stringify(value));
    this.text('[');
    for (let i = 0; i < value.length; i++) {
      if (i) this.text(',');
      const item: unknown = value[i];
      if (item === undefined || typeof item === 'function' || typeof item === 'symbol') this.text('null');
      else this.value(item);
    }
    this.text(']');
  }

  /** The base64 of everything written. */
  finish(): string {
    this.flush(false);
    return this.out;
  }

  private flush(beforePiece: boolean): void {
    if (!this.pending) return;
    // A UTF-16 code unit is at most 3 bytes of UTF-8; 2 more for the padding.
    const needed = 3 * this.pending.length + 2;
    if (needed > scratch.length) scratch = Buffer.allocUnsafeSlow(needed);
    let end = scratch.write(this.pending, 0);
    // Before a piece, the text must fill whole 3-byte groups (spaces, as padToGroups pads); the last text needs no padding.
    if (beforePiece) while (end % 3) scratch[end++] = 0x20;
    this.out += scratch.toString('base64', 0, end);
    this.pending = '';
  }
}

/**
 * Where flush() puts the text it encodes, kept between reviews: a Buffer made per encoding was most
 * of the writer's garbage. Used only within one synchronous flush().
 */
let scratch = Buffer.allocUnsafeSlow(4096);

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
 * rendered by putting the holes' JSON text between the fixed pieces.
 */
export class JsonTemplate<Hole extends string> {
  private readonly pieces: Piece[] = [];
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
      this.pieces.push(new Piece(text.slice(from, at)));
      this.order.push(name);
      from = at + quoted.length;
    }
    this.pieces.push(new Piece(text.slice(from)));
  }

  /** Remembers, as the JSON of `value`, the template with each hole replaced by the JSON text given for it. */
  rememberAs<T extends object>(value: T, holes: Record<Hole, string>): T {
    const fragment: (Piece | string)[] = [this.pieces[0]!];
    for (let i = 0; i < this.order.length; i++) fragment.push(holes[this.order[i]!], this.pieces[i + 1]!);
    return rememberFragment(value, fragment);
  }
}
