// The mesh settings (mesh.json) from the one place users edit them on Kubernetes: a ConfigMap the
// chart renders. The registry bridge publishes them and the injector writes them into pods; both
// read them through this watcher, so the two never disagree.
//
// A bad edit (text that is not YAML, settings the contract refuses, the key removed) keeps the last
// good settings and says what is wrong: in the log (reminded once a minute while it lasts), in
// `problem`, and as a Warning Event on the ConfigMap, where `kubectl describe` shows it. A deleted
// ConfigMap keeps them too: deleting is the most drastic bad edit, and what the sidecars already
// run with must not change because of it. Before any good settings were read there are none: each
// caller says what it does then (the injector injects nothing; the bridge publishes the defaults).
import { CoreV1Api, ListWatch, Watch, type KubeConfig, type V1ConfigMap } from '@kubernetes/client-node';
import YAML from 'yaml';
import { MeshSchema, parseDocument, type Mesh } from './contract/index.js';
import { KubeEventRecorder, type EventDropReason } from './kube-events.js';
import { ConditionLog, describeError, type Logger } from './log.js';

/** Where the mesh settings live: a key of a ConfigMap. */
export interface MeshConfigMap {
  namespace: string;
  name: string;
  key: string;
}

export const DEFAULT_MESH_CONFIGMAP_KEY = 'mesh.yaml';

/** `ConfigMap flomesh/flb-mesh key mesh.yaml`: how logs, Events and errors name it. */
export const describeMeshConfigMap = (ref: MeshConfigMap): string => `ConfigMap ${ref.namespace}/${ref.name} key ${ref.key}`;

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

export type MeshSettingsVerdict =
  /** New good settings: use them. */
  | { outcome: 'changed'; mesh: Mesh }
  /** Nothing new: the same text, or text that parses to the settings in use. */
  | { outcome: 'unchanged' }
  /** Refused; the last good settings (if any) stay in use. */
  | { outcome: 'refused'; problem: string };

/**
 * The last good mesh settings and what is wrong with the newest text, if anything. Pure (no I/O),
 * so every path of an edit is tested without a cluster; the watcher below and the bridge's file
 * watcher feed it what they read.
 */
export class LastGoodMesh {
  private good: Mesh | undefined;
  private goodJson = '';
  /** The text last offered; undefined after a refusal that had no text (key or object missing). */
  private lastText: string | undefined;
  /** What is wrong with what was read last; undefined while the newest text is in use. */
  problem: string | undefined;

  constructor(readonly where: string) {}

  /** The last good settings; undefined until good settings were read once. */
  get mesh(): Mesh | undefined {
    return this.good;
  }

  /** New text of the settings. The same text again is `unchanged` (a relist, an edit of another key), not a second refusal. */
  offer(text: string): MeshSettingsVerdict {
    if (text === this.lastText) return { outcome: 'unchanged' };
    this.lastText = text;
    let mesh: Mesh;
    try {
      mesh = parseMeshSettings(text, this.where);
    } catch (error) {
      this.problem = (error as Error).message;
      return { outcome: 'refused', problem: this.problem };
    }
    this.problem = undefined;
    const json = JSON.stringify(mesh);
    if (json === this.goodJson) return { outcome: 'unchanged' };
    this.good = mesh;
    this.goodJson = json;
    return { outcome: 'changed', mesh };
  }

  /** No text to offer (the key or the object is missing, the file unreadable): the last good settings stay. */
  refuse(problem: string): MeshSettingsVerdict {
    if (this.lastText === undefined && this.problem === problem) return { outcome: 'unchanged' };
    this.lastText = undefined;
    this.problem = problem;
    return { outcome: 'refused', problem };
  }
}

export interface KubeMeshSettingsOptions {
  kubeConfig: KubeConfig;
  configMap: MeshConfigMap;
  log: Logger;
  /** `source.component` of its Events: flb-injector, flb-bridge. */
  component: string;
  /** What the caller does while it has no good settings, for the log and the Event, e.g. "no pod is injected until it is fixed". */
  withoutSettings: string;
  /** Each time new good settings are in use (not for the same settings again). */
  onChange?: (mesh: Mesh) => void;
  /** An Event on the ConfigMap that was not raised (for the caller's metric). */
  onEventDropped?: (reason: EventDropReason) => void;
  /** First retry after a failed list or watch; doubles up to 30 s. */
  retryMs?: number;
  /** While the settings are refused, a reminder this often (60 s). */
  reminderMs?: number;
}

/**
 * Watches one ConfigMap (list and watch of its name only: `list` and `watch` on ConfigMaps in its
 * namespace, `create` on Events there) and keeps the last good mesh settings from one of its keys.
 */
export class KubeMeshSettings {
  private readonly state: LastGoodMesh;
  private readonly informer: ListWatch<V1ConfigMap>;
  private readonly recorder: KubeEventRecorder;
  private readonly watchCondition: ConditionLog;
  private readonly settingsCondition: ConditionLog;
  private readonly reminder: NodeJS.Timeout;
  private uid: string | undefined;
  private listed = false;
  private attemptFailed = false;
  private retryInMs = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private lastError: string | undefined;
  private resolveFirstRead!: () => void;
  private readonly firstRead = new Promise<void>((resolve) => (this.resolveFirstRead = resolve));
  private readOnce = false;

  constructor(private readonly options: KubeMeshSettingsOptions) {
    const { kubeConfig, configMap, log } = options;
    this.state = new LastGoodMesh(describeMeshConfigMap(configMap));
    const core = kubeConfig.makeApiClient(CoreV1Api);
    const fieldSelector = `metadata.name=${configMap.name}`;
    this.informer = new ListWatch<V1ConfigMap>(
      `/api/v1/namespaces/${configMap.namespace}/configmaps`,
      new Watch(kubeConfig),
      async () => {
        const list = await core.listNamespacedConfigMap({ namespace: configMap.namespace, fieldSelector });
        this.listed = true;
        return list;
      },
      false,
      undefined,
      fieldSelector,
    );
    this.informer.on('add', (object) => this.seen(object));
    this.informer.on('update', (object) => this.seen(object));
    this.informer.on('delete', () => this.absent());
    this.informer.on('error', (error) => this.failed(error));
    // Events only on the ConfigMap this watcher holds, with the uid it holds: no lookup, no other object.
    this.recorder = new KubeEventRecorder({
      api: {
        verifiableKinds: new Set(['v1 ConfigMap']),
        uidOf: (subject) => Promise.resolve(subject.namespace === configMap.namespace && subject.name === configMap.name ? this.uid : undefined),
        createEvent: async (namespace, body) => {
          await core.createNamespacedEvent({ namespace, body });
        },
      },
      log,
      component: options.component,
      ...(options.onEventDropped ? { onDropped: options.onEventDropped } : {}),
    });
    this.watchCondition = new ConditionLog(log);
    this.settingsCondition = new ConditionLog(log, { reminderMs: options.reminderMs ?? 60_000 });
    this.reminder = setInterval(() => this.remind(), options.reminderMs ?? 60_000).unref();
  }

  /** The last good settings; undefined until good settings were read once. */
  get mesh(): Mesh | undefined {
    return this.state.mesh;
  }

  /** True once the ConfigMap was read (or found missing) once. */
  get read(): boolean {
    return this.readOnce;
  }

  /** What is wrong with the ConfigMap now (the last good settings, if any, are in use), or why it could not be read yet. */
  get problem(): string | undefined {
    if (this.state.problem !== undefined) return this.state.problem;
    return !this.read && this.watchCondition.current !== undefined ? this.lastError : undefined;
  }

  get where(): string {
    return this.state.where;
  }

  /** True while what the ConfigMap holds now is refused (a bad edit, the key or the object missing). */
  get refused(): boolean {
    return this.state.problem !== undefined;
  }

  /** Starts watching; resolves once the ConfigMap was read (or found missing) once, however long the apiserver takes. */
  start(): Promise<void> {
    void this.connect();
    return this.firstRead;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.reminder);
    this.resolveFirstRead();
    await this.informer.stop();
    await this.recorder.flush();
  }

  private async connect(): Promise<void> {
    this.listed = false;
    this.attemptFailed = false;
    try {
      await this.informer.start();
    } catch (error) {
      this.failed(error);
      return;
    }
    if (this.stopped || this.attemptFailed) return;
    this.retryInMs = 0;
    this.watchCondition.clear('watching the mesh settings again', { settings: this.where });
    if (!this.listed) return;
    // A complete list without the ConfigMap: it does not exist (or went away while we were not watching).
    if (!this.informer.get(this.options.configMap.name, this.options.configMap.namespace)) this.absent();
    if (!this.readOnce) {
      this.readOnce = true;
      this.resolveFirstRead();
    }
  }

  private failed(error: unknown): void {
    if (this.stopped) return;
    this.attemptFailed = true;
    this.retryInMs = Math.min(30_000, this.retryInMs ? this.retryInMs * 2 : (this.options.retryMs ?? 500));
    this.lastError = `cannot read ${this.where}: ${describeError(error)}`;
    this.watchCondition.report('mesh-settings-unreadable', 'cannot list or watch the mesh settings ConfigMap; keeping what we have and retrying', {
      settings: this.where,
      error,
      retryInMs: this.retryInMs,
      ...(this.state.mesh ? {} : { consequence: this.options.withoutSettings }),
    });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => void this.connect(), this.retryInMs);
  }

  private seen(object: V1ConfigMap): void {
    this.uid = object.metadata?.uid;
    const text = object.data?.[this.options.configMap.key];
    const { namespace, name, key } = this.options.configMap;
    this.apply(text === undefined ? this.state.refuse(`ConfigMap ${namespace}/${name} has no key ${key}`) : this.state.offer(text), 'invalid');
  }

  private absent(): void {
    this.uid = undefined;
    const { namespace, name } = this.options.configMap;
    this.apply(this.state.refuse(`ConfigMap ${namespace}/${name} ${this.state.mesh ? 'was deleted' : 'does not exist'}`), 'missing');
  }

  private apply(verdict: MeshSettingsVerdict, kind: 'invalid' | 'missing'): void {
    switch (verdict.outcome) {
      case 'changed':
        this.settingsCondition.clear('the mesh settings are good again', { settings: this.where });
        this.options.log.info({ settings: this.where, mesh: verdict.mesh.name }, 'mesh settings in use');
        try {
          this.options.onChange?.(verdict.mesh);
        } catch (error) {
          this.options.log.error({ err: error, settings: this.where }, 'applying new mesh settings failed');
        }
        return;
      case 'unchanged':
        if (this.state.problem === undefined) this.settingsCondition.clear('the mesh settings are good again', { settings: this.where });
        return;
      case 'refused': {
        const consequence = this.consequence();
        this.settingsCondition.report(`mesh-settings-${kind}:${verdict.problem}`, `the mesh settings were refused; ${consequence}`, {
          level: kind === 'invalid' ? 'error' : 'warn',
          settings: this.where,
          problem: verdict.problem,
          hint:
            kind === 'invalid'
              ? `fix it: kubectl edit configmap -n ${this.options.configMap.namespace} ${this.options.configMap.name}`
              : 'install the chart, or create the ConfigMap',
        });
        // A deleted or never created ConfigMap has nothing to hold an Event.
        if (this.uid) {
          const { namespace, name } = this.options.configMap;
          this.recorder.record({
            subject: { apiVersion: 'v1', kind: 'ConfigMap', namespace, name, uid: this.uid },
            type: 'Warning',
            reason: 'InvalidMeshSettings',
            message: `${verdict.problem}; ${consequence}`,
          });
        }
        return;
      }
    }
  }

  private consequence(): string {
    return this.state.mesh ? 'the last good settings stay in use' : this.options.withoutSettings;
  }

  private remind(): void {
    const problem = this.state.problem;
    if (problem === undefined || this.settingsCondition.current === undefined) return;
    this.settingsCondition.report(this.settingsCondition.current, `the mesh settings are still refused; ${this.consequence()}`, {
      settings: this.where,
      problem,
    });
  }
}
