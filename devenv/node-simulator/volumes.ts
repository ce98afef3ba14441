// A pod's volumes on the node: emptyDir, hostPath, ConfigMap, Secret, downwardAPI, projected
// (ServiceAccount tokens from the TokenRequest API for the audience the spec asks, refreshed
// before they expire; ConfigMaps, Secrets, downward API) and persistentVolumeClaim (a folder per
// claim that outlives its pods, with no binding or provisioner). With the pod's fsGroup, files and
// folders belong to that group, as the kubelet makes them. Files are written the way the kubelet's
// atomic writer does (a timestamped folder behind a `..data` symlink swapped in one rename), so a
// reader never sees half an update, and they are refreshed while the pod runs.
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, renameSync, rmSync, symlinkSync, writeFileSync, lstatSync, chmodSync, chownSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { CoreV1Api, V1Container, V1Pod, V1Volume, V1KeyToPath, V1DownwardAPIVolumeFile } from '@kubernetes/client-node';
import type { Logger } from '../../common/log.js';
import type { Mount } from './containers.js';
import { fieldValue } from './env.js';

export class VolumeError extends Error {
  override name = 'VolumeError';
}

type Files = Map<string, { content: Buffer; mode: number }>;

/** A token is renewed once 80 % of its life has passed, as the kubelet does. */
const RENEW_AT = 0.8;

interface TokenState {
  token: string;
  issuedAt: number;
  expiresAt: number;
}

export class PodVolumes {
  private readonly tokens = new Map<string, TokenState>();
  /** What each volume's files hash to, so an unchanged refresh writes nothing (readers watch for changes). */
  private readonly written = new Map<string, string>();

  constructor(
    private readonly pod: V1Pod,
    /** The pod's folder on the node; each volume gets `volumes/<name>`. */
    private readonly dir: string,
    private readonly core: CoreV1Api,
    private readonly nodeIp: string,
    private readonly log: Logger,
  ) {}

  private volumes(): V1Volume[] {
    return this.pod.spec?.volumes ?? [];
  }

  pathOf(volume: V1Volume): string {
    if (volume.hostPath) return volume.hostPath.path;
    // Claims live beside the pods' folders (<run>/claims/<namespace>/<claim>), so a StatefulSet's
    // next pod finds the data its last one wrote.
    if (volume.persistentVolumeClaim) return join(this.dir, '..', '..', 'claims', this.pod.metadata!.namespace!, volume.persistentVolumeClaim.claimName);
    return join(this.dir, 'volumes', volume.name);
  }

  private get fsGroup(): number | undefined {
    return this.pod.spec?.securityContext?.fsGroup;
  }

  /**
   * Every volume ready to mount; a VolumeError says what is missing (the kubelet's FailedMount).
   * Volumes are set up side by side, as the kubelet's volume manager mounts each in an operation of
   * its own, and so are the API reads within one (a pod's token and CA volumes are four calls).
   */
  async setUp(): Promise<void> {
    await inOrder(this.volumes().map((volume) => this.setUpOne(volume)));
  }

  private async setUpOne(volume: V1Volume): Promise<void> {
    if (volume.hostPath) return;
    const path = this.pathOf(volume);
    if (volume.emptyDir) {
      mkdirSync(path, { recursive: true });
      // Any container user may write, as with the kubelet's emptyDir.
      chmodSync(path, 0o777);
      return;
    }
    if (volume.persistentVolumeClaim) {
      mkdirSync(path, { recursive: true });
      // The fsGroup may write, and what it makes stays the group's (setgid), as on a volume the kubelet mounts.
      if (this.fsGroup !== undefined) chownSync(path, 0, this.fsGroup);
      chmodSync(path, this.fsGroup !== undefined ? 0o2775 : 0o755);
      return;
    }
    if (!volume.configMap && !volume.secret && !volume.projected && !volume.downwardAPI) {
      throw new VolumeError(
        `volume ${volume.name}: only emptyDir, hostPath, configMap, secret, downwardAPI, projected and persistentVolumeClaim volumes are simulated`,
      );
    }
    await this.write(volume, path);
  }

  /** Re-reads ConfigMaps and Secrets and renews tokens; a failure keeps the files as they were. */
  async refresh(): Promise<void> {
    for (const volume of this.volumes()) {
      if (!volume.configMap && !volume.secret && !volume.projected && !volume.downwardAPI) continue;
      try {
        await this.write(volume, this.pathOf(volume));
      } catch (error) {
        this.log.warn({ err: error, volume: volume.name }, 'could not refresh a volume; its files stay as they were');
      }
    }
  }

  mountsFor(container: V1Container): Mount[] {
    const byName = new Map(this.volumes().map((v) => [v.name, v]));
    return (container.volumeMounts ?? []).map((mount) => {
      const volume = byName.get(mount.name);
      if (!volume) throw new VolumeError(`container ${container.name}: volumeMount ${mount.name} names no volume of the pod`);
      const source = mount.subPath ? join(this.pathOf(volume), mount.subPath) : this.pathOf(volume);
      return {
        source,
        target: mount.mountPath,
        readOnly: mount.readOnly ?? Boolean(volume.configMap || volume.secret || volume.projected || volume.downwardAPI),
      };
    });
  }

  /** Off the event loop: the simulator's loop runs every pod's start, and a sync removal of a pod's files held it. */
  async tearDown(): Promise<void> {
    await rm(join(this.dir, 'volumes'), { recursive: true, force: true });
  }

  private async write(volume: V1Volume, path: string): Promise<void> {
    const mode = (m: number | undefined, fallback: number | undefined) => m ?? fallback ?? 0o644;
    if (volume.projected?.sources?.some((source) => source.clusterTrustBundle || source.podCertificate))
      throw new VolumeError(`volume ${volume.name}: clusterTrustBundle and podCertificate sources are not simulated`);
    // Each source read on its own, all at once; merged in the spec's order (a later source's file wins).
    const sources: Promise<Files>[] = [];
    const collect = (fill: (files: Files) => Promise<void> | void) =>
      sources.push(
        (async () => {
          const files: Files = new Map();
          await fill(files);
          return files;
        })(),
      );
    if (volume.configMap) {
      const { name, items, optional, defaultMode } = volume.configMap;
      collect((files) => this.addConfigMap(files, name!, items, optional, mode(undefined, defaultMode)));
    }
    if (volume.secret) {
      const { secretName, items, optional, defaultMode } = volume.secret;
      collect((files) => this.addSecret(files, secretName!, items, optional, mode(undefined, defaultMode)));
    }
    if (volume.downwardAPI) {
      const { items, defaultMode } = volume.downwardAPI;
      collect((files) => this.addDownward(files, items ?? [], mode(undefined, defaultMode)));
    }
    for (const source of volume.projected?.sources ?? []) {
      const fileMode = mode(undefined, volume.projected!.defaultMode);
      const { configMap } = source;
      if (configMap) collect((files) => this.addConfigMap(files, configMap.name!, configMap.items, configMap.optional, fileMode));
      if (source.secret) collect((files) => this.addSecret(files, source.secret!.name!, source.secret!.items, source.secret!.optional, fileMode));
      if (source.downwardAPI) collect((files) => this.addDownward(files, source.downwardAPI!.items ?? [], fileMode));
      const token = source.serviceAccountToken;
      if (token) {
        collect(async (files) => {
          files.set(token.path, { content: Buffer.from(await this.token(token.audience, token.expirationSeconds ?? 3600)), mode: fileMode });
        });
      }
    }
    const files: Files = new Map();
    for (const part of await inOrder(sources)) for (const [relative, file] of part) files.set(relative, file);
    const digest = createHash('sha256');
    for (const [relative, { content, mode }] of [...files].sort(([a], [b]) => a.localeCompare(b)))
      digest.update(`${relative}\0${mode}\0`).update(content).update('\0');
    const hash = digest.digest('hex');
    if (this.written.get(volume.name) === hash) return;
    writeAtomically(path, files, this.fsGroup);
    this.written.set(volume.name, hash);
  }

  private async addConfigMap(files: Files, name: string, items: V1KeyToPath[] | undefined, optional: boolean | undefined, mode: number): Promise<void> {
    const found = await this.core.readNamespacedConfigMap({ name, namespace: this.pod.metadata!.namespace! }).catch((error: unknown) => {
      if ((error as { code?: number }).code === 404) return undefined;
      throw error;
    });
    if (!found) {
      if (optional) return;
      throw new VolumeError(`configmap "${name}" not found`);
    }
    const data = new Map<string, Buffer>([
      ...Object.entries(found.data ?? {}).map(([k, v]) => [k, Buffer.from(v)] as const),
      ...Object.entries(found.binaryData ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64')] as const),
    ]);
    addKeys(files, `configmap ${name}`, data, items, optional, mode);
  }

  private async addSecret(files: Files, name: string, items: V1KeyToPath[] | undefined, optional: boolean | undefined, mode: number): Promise<void> {
    const found = await this.core.readNamespacedSecret({ name, namespace: this.pod.metadata!.namespace! }).catch((error: unknown) => {
      if ((error as { code?: number }).code === 404) return undefined;
      throw error;
    });
    if (!found) {
      if (optional) return;
      throw new VolumeError(`secret "${name}" not found`);
    }
    const data = new Map(Object.entries(found.data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64')] as const));
    addKeys(files, `secret ${name}`, data, items, optional, mode);
  }

  private addDownward(files: Files, items: V1DownwardAPIVolumeFile[], mode: number): void {
    for (const item of items) {
      if (!item.fieldRef) throw new VolumeError(`downwardAPI ${item.path}: only fieldRef items are simulated`);
      const path = item.fieldRef.fieldPath;
      const value =
        path === 'metadata.labels' || path === 'metadata.annotations'
          ? Object.entries(this.pod.metadata?.[path === 'metadata.labels' ? 'labels' : 'annotations'] ?? {})
              .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
              .sort()
              .join('\n')
          : fieldValue(this.pod, path, this.nodeIp);
      files.set(item.path, { content: Buffer.from(value), mode: item.mode ?? mode });
    }
  }

  /** A bound token for the pod's ServiceAccount, renewed at 80 % of its life. */
  private async token(audience: string | undefined, expirationSeconds: number): Promise<string> {
    const key = `${audience ?? ''}|${expirationSeconds}`;
    const held = this.tokens.get(key);
    const now = Date.now();
    if (held && now < held.issuedAt + (held.expiresAt - held.issuedAt) * RENEW_AT) return held.token;
    const metadata = this.pod.metadata!;
    const answer = await this.core.createNamespacedServiceAccountToken({
      name: this.pod.spec?.serviceAccountName ?? 'default',
      namespace: metadata.namespace!,
      body: {
        spec: {
          ...(audience ? { audiences: [audience] } : { audiences: [] }),
          // The apiserver's floor is ten minutes.
          expirationSeconds: Math.max(600, expirationSeconds),
          boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: metadata.name!, uid: metadata.uid! },
        },
      },
    });
    const token = answer.status?.token;
    if (!token) throw new VolumeError(`the TokenRequest for ${metadata.namespace}/${this.pod.spec?.serviceAccountName} returned no token`);
    const expiresAt = answer.status?.expirationTimestamp ? new Date(answer.status.expirationTimestamp).getTime() : now + expirationSeconds * 1000;
    this.tokens.set(key, { token, issuedAt: now, expiresAt });
    return token;
  }
}

/** Every promise's value in order; when some fail, the first failure in order (as one after the other would have thrown). */
async function inOrder<T>(promises: Promise<T>[]): Promise<T[]> {
  const settled = await Promise.allSettled(promises);
  const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  return settled.map((r) => (r as PromiseFulfilledResult<T>).value);
}

function addKeys(files: Files, what: string, data: Map<string, Buffer>, items: V1KeyToPath[] | undefined, optional: boolean | undefined, mode: number): void {
  if (!items) {
    for (const [key, content] of data) files.set(key, { content, mode });
    return;
  }
  for (const item of items) {
    const content = data.get(item.key);
    if (!content) {
      if (optional) continue;
      throw new VolumeError(`${what} has no key ${item.key}`);
    }
    files.set(item.path, { content, mode: item.mode ?? mode });
  }
}

/**
 * The kubelet's atomic writer: the files go to a new timestamped folder, `..data` is pointed at it
 * by a rename (atomic), and each top-level name is a symlink through `..data`. With a group (the
 * pod's fsGroup), files and folders are that group's and the group may read every file.
 */
export function writeAtomically(path: string, files: Files, group?: number): void {
  const own = (target: string) => {
    if (group !== undefined) chownSync(target, 0, group);
  };
  mkdirSync(path, { recursive: true });
  chmodSync(path, 0o755);
  const version = `..${new Date().toISOString().replace(/[:.]/g, '_')}.${Math.random().toString(36).slice(2, 8)}`;
  const versionDir = join(path, version);
  for (const [relative, { content, mode }] of files) {
    if (relative.split('/').some((part) => part === '..' || part === '' || part.startsWith('..')))
      throw new VolumeError(`invalid file path in a volume: ${relative}`);
    const file = join(versionDir, relative);
    mkdirSync(dirname(file), { recursive: true, mode: 0o755 });
    writeFileSync(file, content, { mode });
    own(file);
    own(dirname(file));
    chmodSync(file, group === undefined ? mode : mode | 0o040);
  }
  mkdirSync(versionDir, { recursive: true, mode: 0o755 });
  chmodSync(versionDir, 0o755);
  own(versionDir);
  symlinkSync(version, join(path, '..data_tmp'));
  renameSync(join(path, '..data_tmp'), join(path, '..data'));
  const top = new Set([...files.keys()].map((f) => f.split('/')[0]!));
  for (const name of top) {
    const link = join(path, name);
    try {
      lstatSync(link);
    } catch {
      symlinkSync(join('..data', name), link);
    }
  }
  for (const entry of readdirSync(path)) {
    if (entry === '..data' || entry === version) continue;
    // Older versions, and names the new set no longer has.
    if (entry.startsWith('..') || !top.has(entry)) rmSync(join(path, entry), { recursive: true, force: true });
  }
}
