// How far the sinks are behind each source: the age of the oldest change a source reported that
// the sinks have not written yet (0 once they have written everything). It stands between the
// sources and the catalog, so it sees every report, and asks the sinks to settle: settled()
// resolves once everything told so far is written, and the catalog tells the sinks synchronously.
import type { Service, SidecarConfig } from '../../common/contract/index.js';
import type { CatalogUpdates, Sink } from './types.js';

export class SyncLag implements CatalogUpdates {
  /**
   * Changes are grouped in rounds: a wait for the sinks covers every round up to the one open when
   * it began. Per source, per round not yet covered: when its first change of that round came.
   */
  private readonly unwritten = new Map<string, Map<number, number>>();
  private round = 0;
  /** Bumped when the sinks are replaced (leadership): a wait on the old sinks counts no more. */
  private term = 0;
  private waiting = false;

  constructor(
    private readonly catalog: CatalogUpdates,
    private readonly sourceNames: readonly string[],
    /** The sinks being written now; none on a standby. */
    private readonly sinks: () => readonly Sink[],
    private readonly now: () => number = Date.now,
  ) {}

  upsertService(source: string, service: Service): void {
    this.catalog.upsertService(source, service);
    this.changed(source);
  }

  removeService(source: string, id: string): void {
    this.catalog.removeService(source, id);
    this.changed(source);
  }

  upsertSidecar(source: string, id: string, config: SidecarConfig): void {
    this.catalog.upsertSidecar(source, id, config);
    this.changed(source);
  }

  removeSidecar(source: string, id: string): void {
    this.catalog.removeSidecar(source, id);
    this.changed(source);
  }

  synced(source: string): void {
    this.catalog.synced(source);
  }

  /**
   * Milliseconds the oldest unwritten change of the source has waited; 0 when the sinks hold all
   * it reported; undefined without sinks (a standby writes nothing, so it lags nothing).
   */
  lagMs(source: string): number | undefined {
    if (this.sinks().length === 0) return undefined;
    const rounds = this.unwritten.get(source);
    if (!rounds) return 0;
    return Math.max(0, this.now() - Math.min(...rounds.values()));
  }

  /**
   * The sinks were replaced (this replica started leading) or removed. New sinks are told the
   * whole catalog: every source lags from now until they have written it.
   */
  sinksChanged(): void {
    this.term++;
    this.unwritten.clear();
    this.waiting = false;
    for (const source of this.sourceNames) this.changed(source);
  }

  private changed(source: string): void {
    if (this.sinks().length === 0) return;
    let rounds = this.unwritten.get(source);
    if (!rounds) this.unwritten.set(source, (rounds = new Map()));
    if (!rounds.has(this.round)) rounds.set(this.round, this.now());
    if (!this.waiting) void this.waitForWrites();
  }

  private async waitForWrites(): Promise<void> {
    const term = this.term;
    this.waiting = true;
    // Changes reported in the same turn (a whole catalog told to new sinks) share the first round.
    await Promise.resolve();
    while (term === this.term && this.unwritten.size > 0) {
      const covered = this.round++;
      await Promise.allSettled(this.sinks().map((sink) => sink.settled()));
      if (term !== this.term) return;
      for (const [source, rounds] of this.unwritten) {
        for (const round of rounds.keys()) if (round <= covered) rounds.delete(round);
        if (rounds.size === 0) this.unwritten.delete(source);
      }
    }
    if (term === this.term) this.waiting = false;
  }
}
