// The one normalised catalog every sink is fed from: services and sidecars as the sources report
// them, checked against the contract (and the mesh: VIP ranges), each change passed on only when
// the document really changed. It holds the state while no sink is attached (a standby replica),
// so a replica that becomes leader hands its sinks the whole state at once, and it tells sinks
// they may remove what nobody desires only once every source has synced. It also settles what no
// one source can: which service holds a hostname several claim (names.ts), and registry services'
// VIPs (vips.ts), read back from the published catalog when this replica starts leading.
import { serviceSchemaFor, type Mesh, type Service, type SidecarConfig, SidecarConfigSchema } from '../../common/contract/index.js';
import { issuesOf } from '../../common/contract/validate.js';
import type { Logger } from '../../common/log.js';
import { HostnameBook, type HostnameConflict } from './names.js';
import type { CatalogUpdates, Sink } from './types.js';
import { VipAllocator } from './vips.js';

interface Held<T> {
  source: string;
  value: T;
  json: string;
}

/**
 * A service is held as its published JSON only, parsed again when needed (a leader's sinks
 * attaching, a name or VIP moving): 10,000 services with 100,000 endpoints took about 38 MiB as the
 * source's report and 28 MiB more as the checked document, besides the JSON's 21 MiB.
 */
interface HeldService {
  source: string;
  json: string;
  /**
   * What rendering changed of the source's report: the hostnames it claims (it holds only some)
   * and its own VIPs (a registry service reports none and gets one here).
   */
  reportedHostnames: string[];
  reportedVips: Service['vips'] | undefined;
}

const documentOf = (held: HeldService): Service => JSON.parse(held.json) as Service;
/** The source's report as it was, from what is held: rendered again, it gives the same document. */
const reportOf = (held: HeldService): Service => ({ ...documentOf(held), hostnames: held.reportedHostnames, vips: held.reportedVips }) as Service;

/** A Kubernetes Service here or imported from another cluster: it has its ClusterIP and namespace names. */
const isKubernetes = (service: Pick<Service, 'source'>) => service.source === 'kubernetes' || String(service.source).startsWith('cluster:');

// A report is checked only when rendered: until then its fields may be missing (defaults unapplied) or wrong.
const reportedHostnames = (s: Service): string[] => (Array.isArray(s.hostnames) ? s.hostnames.filter((h) => typeof h === 'string') : []);
const claimedHostnames = (s: Service): string[] =>
  isKubernetes(s) && typeof s.name === 'string' ? [...reportedHostnames(s), s.name.toLowerCase()] : reportedHostnames(s);

export interface CatalogStats {
  services: number;
  sidecars: number;
  rejected: number;
  conflicts: number;
}

export class Catalog implements CatalogUpdates {
  private mesh: Mesh;
  private schema: ReturnType<typeof serviceSchemaFor>;
  private readonly services = new Map<string, HeldService>();
  private readonly hostnames = new HostnameBook();
  private readonly vips: VipAllocator;
  /** Hostnames each service was last told it lost, so a loss is logged once. */
  private readonly lostNames = new Map<string, string>();
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
    this.vips = new VipAllocator(mesh.vipRanges);
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
    // VIPs outside new ranges move into them.
    for (const id of this.vips.setRanges(mesh.vipRanges)) this.render(id);
  }

  /**
   * VIPs read back from the published catalog (id to address): they are their services' from now
   * on, so a restarted or newly leading replica publishes the VIPs sidecars already hold. Called
   * before sinks are attached.
   */
  adoptStoredVips(stored: ReadonlyMap<string, string>): void {
    for (const id of this.vips.adoptStored(stored)) this.render(id);
  }

  /** Hostnames claimed by more than one service, and who holds each. */
  nameConflicts(): HostnameConflict[] {
    return this.hostnames.conflicts();
  }

  /** Sinks start receiving: the whole state now, then every change; removals once all sources synced. */
  attach(sinks: readonly Sink[]): void {
    this.sinks = sinks;
    this.completed = false;
    for (const sink of sinks) {
      sink.setMesh(this.mesh);
      for (const [id, held] of this.services) sink.setService(id, documentOf(held), held.json, held.source);
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
    const affected = this.hostnames.claim({ id: service.id, rank: this.rank(source), kubernetes: isKubernetes(service) }, claimedHostnames(service));
    if (!this.render(service.id, { source, reported: service })) {
      // Refused: claims go back to what the published version claims.
      if (held && held.source === source) {
        const report = reportOf(held);
        this.hostnames.claim({ id: service.id, rank: this.rank(source), kubernetes: isKubernetes(report) }, claimedHostnames(report));
      } else {
        this.hostnames.release(service.id);
        this.vips.release(service.id);
      }
    }
    for (const id of affected) this.render(id);
  }

  /**
   * Publishes a service as it is now: the hostnames it holds of those it claims, and for a
   * registry service its VIP. `next` is a new report; without it the held report is rendered again
   * (a hostname or VIP moved). False when the contract refused the service (it stays as it was).
   */
  private render(id: string, next?: { source: string; reported: Service }): boolean {
    const held = this.services.get(id);
    const source = next?.source ?? held?.source;
    const reported = next?.reported ?? (held ? reportOf(held) : undefined);
    if (source === undefined || reported === undefined) return false;
    const wanted = reportedHostnames(reported);
    const hostnames = this.hostnames.held(id, wanted);
    const lost = wanted.filter((h) => !hostnames.includes(h)).join(', ');
    if (lost !== (this.lostNames.get(id) ?? '')) {
      if (lost) {
        this.stats.conflicts++;
        const holders = wanted.filter((h) => !hostnames.includes(h)).map((h) => `${h}: ${this.hostnames.holder(h)}`);
        this.log.warn({ id, source, lost: holders }, 'hostnames another service holds are left out of this one (registry-bridge/README.md, Names)');
        this.lostNames.set(id, lost);
      } else this.lostNames.delete(id);
    }
    let vips = reported.vips;
    if ((vips === undefined || vips.length === 0) && !isKubernetes(reported)) {
      const address = this.vips.allocate(id);
      if (address === undefined) {
        this.reject(source, id, `no free VIP in the mesh ranges (${this.mesh.vipRanges.join(', ')})`);
        return false;
      }
      vips = [{ address, allocation: 'mesh' }];
    }
    const checked = this.schema.safeParse({ ...reported, hostnames, ...(vips ? { vips } : {}) });
    if (!checked.success) {
      this.reject(
        source,
        id,
        issuesOf(checked.error)
          .slice(0, 5)
          .map((i) => `${i.field}: ${i.message}`)
          .join('; '),
      );
      return false;
    }
    const json = `${JSON.stringify(checked.data)}\n`;
    this.services.set(id, { source, json, reportedHostnames: wanted, reportedVips: reported.vips });
    this.stats.services = this.services.size;
    if (held && held.json === json) return true;
    for (const sink of this.sinks) sink.setService(id, checked.data, json, source);
    return true;
  }

  private reject(source: string, id: string, why: string): void {
    this.stats.rejected++;
    this.log.warn({ id, source, why }, 'a service breaks the contract and is left as it was');
    this.onRejected(source, id, why);
  }

  removeService(source: string, id: string): void {
    const held = this.services.get(id);
    if (!held || held.source !== source) return;
    this.services.delete(id);
    this.lostNames.delete(id);
    this.vips.release(id);
    this.stats.services = this.services.size;
    for (const sink of this.sinks) sink.setService(id, undefined, undefined, source);
    for (const other of this.hostnames.release(id)) this.render(other);
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
    // Stored VIPs whose services did not come back in any source's full list are free again.
    if (this.allSynced) this.vips.forgetUnclaimedStored();
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
    const held = this.services.get(id);
    return held ? documentOf(held) : undefined;
  }

  sidecarIds(): IterableIterator<string> {
    return this.sidecars.keys();
  }
}
