// The repo sink: the catalog as the contract lays it out in the config center (`/flb/mesh`:
// mesh.json and one file per service; `/flb/sidecars/<id>`: sidecar.json, derived from the mesh),
// written by the publisher. Publishes start as soon as something changed (no batching window:
// changes that arrive while one is in flight go out together in the next), since the time from a
// Kubernetes change to the sidecars holding it is what users wait for.
import { readFileSync } from 'node:fs';
import { serviceFilePath, type Mesh, type RepoSinkConfig, type Service, type SidecarConfig } from '../../common/contract/index.js';
import type { Logger } from '../../common/log.js';
import type { Sink, SinkStatus } from '../core/types.js';
import { Publisher } from './repo-publisher.js';

export class RepoSink implements Sink {
  readonly kind = 'repo';
  readonly name: string;
  private readonly publisher: Publisher;
  private pending = 0;
  private toldCount = 0;
  private watching = false;
  private lastWriteAt = 0;

  constructor(
    private readonly config: RepoSinkConfig,
    log: Logger,
  ) {
    this.name = config.name;
    const read = (file: string, what: string) => {
      try {
        return readFileSync(file);
      } catch (error) {
        throw new Error(`repo sink ${config.name}: cannot read the ${what} ${file} (${(error as Error).message}); check sinks[].tls in the BridgeConfig`, {
          cause: error,
        });
      }
    };
    const tls = config.tls
      ? {
          ...(config.tls.caFile ? { ca: read(config.tls.caFile, 'CA') } : {}),
          cert: read(config.tls.certFile, 'client certificate'),
          key: read(config.tls.keyFile, 'client key'),
        }
      : undefined;
    this.publisher = new Publisher({ url: config.url, ...(tls ? { tls } : {}), log: log.child({ sink: config.name }), batchMs: 0 });
  }

  setMesh(mesh: Mesh): void {
    this.publisher.setMeshFile('/mesh.json', `${JSON.stringify(mesh)}\n`);
    this.told();
  }

  setService(id: string, service: Service | undefined, json: string | undefined): void {
    this.publisher.setMeshFile(`/${serviceFilePath(id)}`, service ? (json ?? `${JSON.stringify(service)}\n`) : undefined);
    this.told();
  }

  setSidecar(id: string, config: SidecarConfig | undefined): void {
    if (config) this.publisher.setSidecar(id, new Map([['/sidecar.json', `${JSON.stringify(config)}\n`]]));
    else this.publisher.removeSidecar(id);
    this.told();
  }

  complete(): void {
    this.publisher.markComplete();
  }

  /**
   * Counts a change the publisher was just given as pending until a publish has it. Called after
   * the publisher has it: asked before, settled() answered at once and a whole catalog still in
   * flight read as 0 pending.
   */
  private told(): void {
    this.toldCount++;
    this.pending++;
    if (!this.watching) this.watchPending();
  }

  private watchPending(): void {
    this.watching = true;
    const upTo = this.toldCount;
    void this.publisher.settled().then(() => {
      // A change told after the publisher went idle, before this ran, is not written yet.
      if (this.toldCount !== upTo) return this.watchPending();
      this.watching = false;
      this.pending = 0;
      this.lastWriteAt = Date.now();
    });
  }

  async settled(): Promise<void> {
    await this.publisher.settled();
  }

  /** Mesh VIPs in the published registry services' files (only registry ids can hold one: `<name>.<registry>.<source>`). */
  async storedVips(): Promise<Map<string, string>> {
    const files = await this.publisher.readMeshFiles((path) => /^\/services\/.+\.(consul|eureka|static)\.json$/.test(path));
    const vips = new Map<string, string>();
    for (const text of files.values()) {
      let service: { id?: unknown; vips?: unknown };
      try {
        service = JSON.parse(text) as typeof service;
      } catch {
        continue;
      }
      const mesh = Array.isArray(service.vips) ? service.vips.find((v: { allocation?: unknown }) => v?.allocation === 'mesh') : undefined;
      if (typeof service.id === 'string' && typeof mesh?.address === 'string') vips.set(service.id, mesh.address);
    }
    return vips;
  }

  async storedMesh(): Promise<string | undefined> {
    return (await this.publisher.readMeshFiles((path) => path === '/mesh.json')).get('/mesh.json');
  }

  async stop(): Promise<void> {
    this.publisher.stop();
  }

  status(): SinkStatus {
    const stats = this.publisher.stats;
    return {
      name: this.name,
      kind: this.kind,
      address: this.config.url,
      pending: this.pending,
      writes: stats.publishes,
      failures: stats.failures,
      lastWriteAt: this.lastWriteAt,
      ...(stats.lastError ? { lastError: stats.lastError } : {}),
    };
  }
}
