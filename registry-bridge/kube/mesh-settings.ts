// The mesh settings (mesh.json) the bridge publishes: from the ConfigMap the chart renders, read
// through common/kube-mesh-settings.ts as the injector reads it, so the two never disagree; or from
// a file on VMs. A bad edit keeps the last good settings (an Event on the ConfigMap says why). A
// bridge that starts without good settings (the ConfigMap missing or bad) publishes what the repo
// already holds (adoptPublished), so a restart never swaps the mesh sidecars run on for the
// defaults; only with nothing published either does it publish the defaults, with a warning.
import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import type { KubeConfig } from '@kubernetes/client-node';
import { defaultMesh, type Mesh } from '../../common/contract/index.js';
import type { EventDropReason } from '../../common/kube-events.js';
import { describeMeshConfigMap, KubeMeshSettings, LastGoodMesh, parseMeshSettings, type MeshConfigMap } from '../../common/kube-mesh-settings.js';
import type { Logger } from '../../common/log.js';

export interface MeshSettingsOptions {
  kubeConfig?: KubeConfig;
  configMap?: MeshConfigMap;
  file?: string;
  log: Logger;
  onChange: (mesh: Mesh) => void;
  onEventDropped?: (reason: EventDropReason) => void;
}

export class MeshSettings {
  private readonly defaults = defaultMesh();
  /** The mesh.json the repo held when this replica started leading, while no good settings were read. */
  private published: Mesh | undefined;
  private readonly kube?: KubeMeshSettings;
  private readonly fileSettings?: LastGoodMesh;

  constructor(private readonly options: MeshSettingsOptions) {
    const { configMap, file, kubeConfig, log } = options;
    if (file) this.fileSettings = new LastGoodMesh(`file ${file}`);
    else if (configMap && kubeConfig)
      this.kube = new KubeMeshSettings({
        kubeConfig,
        configMap,
        log,
        component: 'flb-bridge',
        withoutSettings: 'the bridge publishes the mesh.json sidecars already hold (the defaults if none) until it is fixed',
        onChange: options.onChange,
        ...(options.onEventDropped ? { onEventDropped: options.onEventDropped } : {}),
      });
    else throw new Error('mesh settings need a ConfigMap (with a kubeconfig) or a file');
  }

  /** The last good settings; the defaults until good settings were read once. */
  current(): Mesh {
    return (this.kube ?? this.fileSettings)?.mesh ?? this.published ?? this.defaults;
  }

  /** Good settings were read at least once (a refused edit since then keeps them). */
  get loaded(): boolean {
    return (this.kube ?? this.fileSettings)?.mesh !== undefined;
  }

  /**
   * The published mesh.json, to use instead of the defaults until good settings are read. Returns
   * the settings now in use when they changed, undefined when nothing changes (good settings are
   * in, or the text is not valid settings).
   */
  adoptPublished(text: string): Mesh | undefined {
    if (this.loaded) return undefined;
    let mesh: Mesh;
    try {
      mesh = parseMeshSettings(text, 'the published mesh.json');
    } catch (error) {
      this.options.log.warn({ err: (error as Error).message }, 'the published mesh.json is not valid settings; publishing the defaults');
      return undefined;
    }
    this.published = mesh;
    this.options.log.warn(
      { settings: this.where, mesh: mesh.name },
      'no good mesh settings to read; publishing what sidecars already hold (the published mesh.json) until they are fixed',
    );
    return mesh;
  }

  get where(): string {
    const { configMap, file } = this.options;
    return configMap ? describeMeshConfigMap(configMap) : `file ${file}`;
  }

  /** What is wrong with the settings as they are now, if they were refused (the last good ones are in use). */
  get problem(): string | undefined {
    return (this.kube ?? this.fileSettings)?.problem;
  }

  /** Resolves with the settings once read (or found missing: the defaults). */
  async start(): Promise<Mesh> {
    const { file } = this.options;
    if (file) {
      this.readFile(file);
      watchFile(file, { interval: 2000 }, () => this.readFile(file));
    } else await this.kube!.start();
    return this.current();
  }

  async stop(): Promise<void> {
    if (this.options.file) unwatchFile(this.options.file);
    await this.kube?.stop();
  }

  private readFile(file: string): void {
    const settings = this.fileSettings!;
    let verdict;
    try {
      verdict = settings.offer(readFileSync(file, 'utf8'));
    } catch (error) {
      verdict = settings.refuse(`cannot read ${this.where}: ${(error as Error).message}`);
    }
    if (verdict.outcome === 'changed') {
      this.options.log.info({ settings: this.where, mesh: verdict.mesh.name }, 'mesh settings in use');
      this.options.onChange(verdict.mesh);
    } else if (verdict.outcome === 'refused') {
      const consequence = settings.mesh
        ? 'the last good settings stay in use'
        : 'the bridge publishes the mesh.json sidecars already hold (the defaults if none) until it is fixed';
      this.options.log.error({ settings: this.where, problem: verdict.problem }, `the mesh settings were refused; ${consequence}`);
    }
  }
}
