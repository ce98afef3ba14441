// The one normalised catalog every sink is fed from: services and sidecars as the sources report
// them, checked against the contract (and the mesh: VIP ranges), each change passed on only when
// the document really changed. It holds the state while no sink is attached (a standby replica),
// so a replica that becomes leader hands its sinks the whole state at once, and it tells sinks
// they may remove what nobody desires only once every source has synced.
import { serviceSchemaFor, type Mesh, type Service, type SidecarConfig, SidecarConfigSchema } from '../../common/contract/index.js';
import { issuesOf } from '../../common/contract/validate.js';
import type { Logger } from '../../common/log.js';
import type { CatalogUpdates, Sink } from './types.js';

interface Held<T> {
  source: string;
  value: T;
  json: string;
}

export interface CatalogStats {
  services: number;
  sidecars: number;
  rejected: number;
  conflicts: number;
}

export class Catalog implements CatalogUpdates {
  private mesh: Mesh;
  private schema: ReturnType<typeof serviceSchemaFor>;
  private readonly services = new Map<string, Held<Service>>();
  private readonly sidecars = new Map<string, Held<SidecarConfig>>();
  private readonly syncedSources = new Set<string>();
  private sinks: readonly Sink[] = [];
  private completed = false;
  readonly stats: CatalogStats = { services: 0, sidecars: 0, rejected: 0, conflicts: 0 };

  constructor(
    /** Source names in BridgeConfig order: when two report the same id, the one listed first wins. */
    private readonly sourceOrder: readonly string[],
    mesh: Mesh,
    private readonly log: Logger,
    /** Problems a user should see on the object (an Event), besides the log. */
    private readonly onRejected: (source: string, id: string, why: string) => void = () => {},
  ) {
    this.mesh = mesh;
    this.schema = serviceSchemaFor(mesh);
  }

  get allSynced(): boolean {
    return this.sourceOrder.every((s) => this.syncedSources.has(s));
  }

  getMesh(): Mesh {
    return this.mesh;
  }

  setMesh(mesh: Mesh): void {
    this.mesh = mesh;
    this.schema = serviceSchemaFor(mesh);
    for (const sink of this.sinks) sink.setMesh(mesh);
  }

  /** Sinks start receiving: the whole state now, then every change; removals once all sources synced. */
  attach(sinks: readonly Sink[]): void {
    this.sinks = sinks;
    this.completed = false;
    for (const sink of sinks) {
      sink.setMesh(this.mesh);
      for (const [id, held] of this.services) sink.setService(id, held.value, held.json);
      for (const [id, held] of this.sidecars) sink.setSidecar(id, held.value);
    }
    this.maybeComplete();
  }

  detach(): readonly Sink[] {
    const sinks = this.sinks;
    this.sinks = [];
    this.completed = false;
    return sinks;
  }

  private rank(source: string): number {
    const i = this.sourceOrder.indexOf(source);
    return i < 0 ? Number.MAX_SAFE_INTEGER : i;
  }

  upsertService(source: string, service: Service): void {
    const held = this.services.get(service.id);
    if (held && held.source !== source && this.rank(held.source) < this.rank(source)) {
      this.stats.conflicts++;
      this.log.warn(
        { id: service.id, source, keptFrom: held.source },
        'two sources report the same service id; the one listed first in the BridgeConfig is kept',
      );
      return;
    }
    const checked = this.schema.safeParse(service);
    if (!checked.success) {
      this.stats.rejected++;
      const why = issuesOf(checked.error)
        .slice(0, 5)
        .map((i) => `${i.field}: ${i.message}`)
        .join('; ');
      this.log.warn({ id: service.id, source, why }, 'a service breaks the contract and is left as it was');
      this.onRejected(source, service.id, why);
      return;
    }
    const json = `${JSON.stringify(checked.data)}\n`;
    if (held && held.json === json) return;
    this.services.set(service.id, { source, value: checked.data, json });
    this.stats.services = this.services.size;
    for (const sink of this.sinks) sink.setService(service.id, checked.data, json);
  }

  removeService(source: string, id: string): void {
    const held = this.services.get(id);
    if (!held || held.source !== source) return;
    this.services.delete(id);
    this.stats.services = this.services.size;
    for (const sink of this.sinks) sink.setService(id, undefined, undefined);
  }

  upsertSidecar(source: string, id: string, config: SidecarConfig): void {
    const checked = SidecarConfigSchema.safeParse(config);
    if (!checked.success) {
      this.stats.rejected++;
      const why = issuesOf(checked.error)
        .slice(0, 5)
        .map((i) => `${i.field}: ${i.message}`)
        .join('; ');
      this.log.warn({ id, source, why }, 'a sidecar.json breaks the contract and is left as it was');
      this.onRejected(source, id, why);
      return;
    }
    const json = JSON.stringify(checked.data);
    const held = this.sidecars.get(id);
    if (held && held.json === json) return;
    this.sidecars.set(id, { source, value: checked.data, json });
    this.stats.sidecars = this.sidecars.size;
    for (const sink of this.sinks) sink.setSidecar(id, checked.data);
  }

  removeSidecar(source: string, id: string): void {
    const held = this.sidecars.get(id);
    if (!held || held.source !== source) return;
    this.sidecars.delete(id);
    this.stats.sidecars = this.sidecars.size;
    for (const sink of this.sinks) sink.setSidecar(id, undefined);
  }

  synced(source: string): void {
    if (this.syncedSources.has(source)) return;
    this.syncedSources.add(source);
    this.log.info({ source, services: this.stats.services, sidecars: this.stats.sidecars }, 'source synced');
    this.maybeComplete();
  }

  private maybeComplete(): void {
    if (this.completed || !this.allSynced || this.sinks.length === 0) return;
    this.completed = true;
    for (const sink of this.sinks) sink.complete();
  }

  serviceIds(): IterableIterator<string> {
    return this.services.keys();
  }

  service(id: string): Service | undefined {
    return this.services.get(id)?.value;
  }

  sidecarIds(): IterableIterator<string> {
    return this.sidecars.keys();
  }
}
