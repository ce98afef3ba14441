// The bridge's two small interfaces. A source (Kubernetes; Consul and Eureka next) reports the
// services and sidecars it sees, one change at a time, and says when it has listed everything
// once: until then nothing it has not reported yet may be removed anywhere. A sink (the repo;
// Kubernetes, Consul and Eureka next) is told the desired state and reconciles its target to it.
import type { Mesh, Service, SidecarConfig } from '../../common/contract/index.js';

export interface CatalogUpdates {
  upsertService(source: string, service: Service): void;
  removeService(source: string, id: string): void;
  upsertSidecar(source: string, id: string, config: SidecarConfig): void;
  removeSidecar(source: string, id: string): void;
  /** Everything the source has was reported at least once (the first-sync gate). */
  synced(source: string): void;
}

export type SourceState = 'starting' | 'synced' | 'stale';

export interface SourceStatus {
  name: string;
  kind: string;
  /** Where it reads from (the apiserver, a registry's address). */
  address: string;
  state: SourceState;
  services: number;
  endpoints: number;
  sidecars: number;
  /** When it last heard from its registry (ms since the epoch; 0: never). */
  lastContactAt: number;
  lastSyncAt: number;
  errors: number;
  lastError?: string;
}

export interface Source {
  readonly name: string;
  readonly kind: string;
  start(updates: CatalogUpdates): void;
  /** A new mesh.json: sources whose output depends on it (cluster name, domain) report again. */
  setMesh(mesh: Mesh): void;
  stop(): Promise<void>;
  status(): SourceStatus;
}

/** What `/status` and the metrics show of a sink's renewals, counted since it started. */
export interface RenewalCounts {
  /** Renewals sent, whatever the answer. */
  sent: number;
  /** Renewals the server did not answer, or answered with neither 200 nor 404. */
  failed: number;
  /** Instances registered again after a renewal was answered 404 (the server had lost them). */
  reregistered: number;
  /** Renewals sent more than renewalIntervalSeconds after the one before for that instance (or its registration). */
  late: number;
}

export interface SinkStatus {
  name: string;
  kind: string;
  address: string;
  /** Changes told and not yet written. */
  pending: number;
  writes: number;
  failures: number;
  lastWriteAt: number;
  lastError?: string;
  /** Only a sink that keeps its registrations alive by renewing them (Eureka). */
  renewals?: RenewalCounts;
}

export interface Sink {
  readonly name: string;
  readonly kind: string;
  setMesh(mesh: Mesh): void;
  /**
   * `json` is the service as the catalog serialised it (sinks that store JSON write it as is);
   * `source` the name of the source that reported it (registry sinks write only some sources').
   */
  setService(id: string, service: Service | undefined, json: string | undefined, source?: string): void;
  setSidecar(id: string, config: SidecarConfig | undefined): void;
  /** Every source has synced: what the sink holds and nobody desires may now be removed. */
  complete(): void;
  /** Resolves once everything told so far is written. */
  settled(): Promise<void>;
  stop(): Promise<void>;
  status(): SinkStatus;
  /**
   * The mesh VIPs of registry services as this sink stored them with the catalog (id to address),
   * read when this replica starts leading so it publishes the VIPs sidecars hold. Sinks that store
   * no catalog have none. Rejects when the target cannot be read (the caller retries).
   */
  storedVips?(): Promise<Map<string, string>>;
  /**
   * The mesh.json this sink published last (its text; undefined if none), read when this replica
   * starts leading without good mesh settings of its own: what sidecars hold beats the defaults.
   */
  storedMesh?(): Promise<string | undefined>;
}
