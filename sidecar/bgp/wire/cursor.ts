// Bounds-checked reads over a byte range. Every read past the range throws Overrun, which each
// parser turns into the error its RFC names for that field: the decoder never reads a byte it
// was not given, however the lengths inside a message lie.

/**
 * Not an Error: it never leaves the codec (each parser turns it into the RFC's error), and a peer
 * can make us throw one per attribute, so it skips the stack trace an Error would capture.
 */
export class Overrun {
  constructor(readonly message: string) {}
}

export class Cursor {
  private readonly view: DataView;
  offset: number;

  constructor(
    readonly bytes: Uint8Array,
    start = 0,
    readonly end = bytes.length,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.offset = start;
  }

  get remaining(): number {
    return this.end - this.offset;
  }

  private need(n: number, what: string): void {
    if (this.offset + n > this.end) throw new Overrun(`${what}: needs ${n} bytes, ${this.remaining} left`);
  }

  u8(what = 'byte'): number {
    this.need(1, what);
    return this.view.getUint8(this.offset++);
  }

  u16(what = '16-bit field'): number {
    this.need(2, what);
    const value = this.view.getUint16(this.offset);
    this.offset += 2;
    return value;
  }

  u32(what = '32-bit field'): number {
    this.need(4, what);
    const value = this.view.getUint32(this.offset);
    this.offset += 4;
    return value;
  }

  /** A view (no copy) of the next n bytes. */
  take(n: number, what = 'field'): Uint8Array {
    this.need(n, what);
    const out = this.bytes.subarray(this.offset, this.offset + n);
    this.offset += n;
    return out;
  }
}

/** Builds a message from parts without knowing its length up front. */
export class Writer {
  private buffer = new Uint8Array(256);
  private view = new DataView(this.buffer.buffer);
  length = 0;

  private room(n: number): void {
    if (this.length + n <= this.buffer.length) return;
    const bigger = new Uint8Array(Math.max(this.buffer.length * 2, this.length + n));
    bigger.set(this.buffer.subarray(0, this.length));
    this.buffer = bigger;
    this.view = new DataView(bigger.buffer);
  }

  u8(value: number): this {
    this.room(1);
    this.view.setUint8(this.length++, value);
    return this;
  }

  u16(value: number): this {
    this.room(2);
    this.view.setUint16(this.length, value);
    this.length += 2;
    return this;
  }

  u32(value: number): this {
    this.room(4);
    this.view.setUint32(this.length, value >>> 0);
    this.length += 4;
    return this;
  }

  bytes(value: Uint8Array | readonly number[]): this {
    this.room(value.length);
    this.buffer.set(value, this.length);
    this.length += value.length;
    return this;
  }

  /** Writes a placeholder and returns a function that fills it with the bytes written since. */
  lengthSlot(size: 1 | 2): () => number {
    const at = this.length;
    if (size === 1) this.u8(0);
    else this.u16(0);
    return () => {
      const written = this.length - at - size;
      if (written >= 1 << (8 * size)) throw new RangeError(`${written} bytes do not fit a ${size}-byte length field`);
      if (size === 1) this.view.setUint8(at, written);
      else this.view.setUint16(at, written);
      return written;
    };
  }

  /** Turns a 2-byte attribute length written at `start + 2` into a 1-byte one (clearing Extended Length), moving what follows. */
  shortenLength(start: number, length: number): void {
    this.buffer[start]! &= ~0x10;
    this.buffer[start + 2] = length;
    this.buffer.copyWithin(start + 3, start + 4, this.length);
    this.length -= 1;
  }

  finish(): Uint8Array {
    return this.buffer.slice(0, this.length);
  }
}
