// The mesh settings (mesh.json) from the one place users edit them: a ConfigMap that the chart
// renders (a file on VMs). The bridge publishes them and the injector reads the same ConfigMap, so
// the two never disagree. A bad edit keeps the last good settings and says what is wrong, in the
// log and as an Event on the ConfigMap; a missing ConfigMap means the defaults, with a warning.
import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import type { KubeConfig } from '@kubernetes/client-node';
import YAML from 'yaml';
import { defaultMesh, MeshSchema, parseDocument, type Mesh } from '../../common/contract/index.js';
import type { KubeEvent } from '../../common/kube-events.js';
import type { Logger } from '../../common/log.js';
import { Informer } from './informer.js';

export interface MeshSettingsOptions {
  kubeConfig?: KubeConfig;
  configMap?: { namespace: string; name: string; key: string };
  file?: string;
  log: Logger;
  onChange: (mesh: Mesh) => void;
  raiseEvent?: (event: KubeEvent) => void;
}

/** Parses mesh settings text (YAML or JSON); throws an error that names each bad field. */
export function parseMeshSettings(text: string, where: string): Mesh {
  let data: unknown;
  try {
    data = YAML.parse(text);
  } catch (error) {
    throw new Error(`${where} is neither YAML nor JSON: ${(error as Error).message.split('\n')[0]}`, { cause: error });
  }
  return parseDocument(MeshSchema, data, where);
}

export class MeshSettings {
  private mesh: Mesh = defaultMesh();
  private lastText: string | undefined;
  private informer?: Informer<{ uid: string; text: string | undefined }>;
  private loaded = false;
  private readonly waiters: (() => void)[] = [];
  /** What is wrong with the current text, if it was refused (the last good settings are in use). */
  problem: string | undefined;

  constructor(private readonly options: MeshSettingsOptions) {}

  current(): Mesh {
    return this.mesh;
  }

  get where(): string {
    const { configMap, file } = this.options;
    return configMap ? `ConfigMap ${configMap.namespace}/${configMap.name} key ${configMap.key}` : `file ${file}`;
  }

  /** Resolves with the settings once read (or found missing: the defaults). */
  async start(): Promise<Mesh> {
    const { configMap, file, kubeConfig } = this.options;
    if (file) {
      this.readFile(file);
      watchFile(file, { interval: 2000 }, () => this.readFile(file));
      return this.mesh;
    }
    if (!configMap || !kubeConfig) throw new Error('mesh settings need a ConfigMap (with a kubeconfig) or a file');
    this.informer = new Informer({
      kubeConfig,
      log: this.options.log,
      path: `/api/v1/namespaces/${configMap.namespace}/configmaps`,
      fieldSelector: `metadata.name=${configMap.name}`,
      transform: (raw) => {
        const data = raw.data as Record<string, unknown> | undefined;
        const text = data?.[configMap.key];
        return { uid: raw.metadata?.uid ?? '', text: typeof text === 'string' ? text : undefined };
      },
      onEvent: (event) => this.apply(event.type === 'upsert' ? event.object : undefined),
      onSynced: () => {
        if (!this.informer?.get(`${configMap.namespace}/${configMap.name}`)) this.apply(undefined);
        this.loaded = true;
        for (const resolve of this.waiters.splice(0)) resolve();
      },
    });
    this.informer.start();
    if (!this.loaded) await new Promise<void>((resolve) => this.waiters.push(resolve));
    return this.mesh;
  }

  async stop(): Promise<void> {
    if (this.options.file) unwatchFile(this.options.file);
    await this.informer?.stop();
  }

  private readFile(file: string): void {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (error) {
      this.refuse(`cannot read ${this.where}: ${(error as Error).message}`, undefined);
      return;
    }
    this.accept(text, undefined);
  }

  private apply(object: { uid: string; text: string | undefined } | undefined): void {
    if (!object) {
      if (this.lastText === undefined && this.loaded) return;
      this.options.log.warn({ settings: this.where }, 'the mesh settings are missing; the defaults apply (install the chart, or create the ConfigMap)');
      this.lastText = undefined;
      this.problem = undefined;
      this.set(defaultMesh());
      return;
    }
    if (object.text === undefined) {
      this.refuse(`${this.where} is missing; the ConfigMap has no such key`, object.uid);
      return;
    }
    this.accept(object.text, object.uid);
  }

  private accept(text: string, uid: string | undefined): void {
    if (text === this.lastText) return;
    this.lastText = text;
    let mesh: Mesh;
    try {
      mesh = parseMeshSettings(text, this.where);
    } catch (error) {
      this.refuse((error as Error).message, uid);
      return;
    }
    this.problem = undefined;
    this.set(mesh);
  }

  private set(mesh: Mesh): void {
    if (JSON.stringify(mesh) === JSON.stringify(this.mesh) && this.loaded) return;
    this.mesh = mesh;
    this.options.log.info({ settings: this.where, mesh: mesh.name }, 'mesh settings in use');
    this.options.onChange(mesh);
  }

  private refuse(problem: string, uid: string | undefined): void {
    this.problem = problem;
    this.options.log.error({ settings: this.where, problem }, 'the mesh settings were refused; the last good ones stay in use');
    const configMap = this.options.configMap;
    if (configMap && uid) {
      this.options.raiseEvent?.({
        subject: { apiVersion: 'v1', kind: 'ConfigMap', namespace: configMap.namespace, name: configMap.name, uid },
        type: 'Warning',
        reason: 'InvalidMeshSettings',
        message: `${problem}; the last good settings stay in use`,
      });
    }
  }
}
