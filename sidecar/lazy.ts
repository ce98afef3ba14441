/** A value made on first use, once (a failed attempt is tried again on the next use). */
export class Lazy<T> {
  private value: T | undefined;
  private pending: Promise<T> | undefined;

  constructor(private readonly make: () => Promise<T>) {}

  /** The value if it is made already. */
  current(): T | undefined {
    return this.value;
  }

  get(): Promise<T> {
    this.pending ??= this.make().then(
      (value) => (this.value = value),
      (error: unknown) => {
        this.pending = undefined;
        throw error;
      },
    );
    return this.pending;
  }
}
