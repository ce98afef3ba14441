/*
 * The CNI installer of the node agent: copies the plugin binary, chains the plugin into the
 * network configuration the runtime uses (the first file of the config directory by name, as
 * kubelet/containerd/CRI-O pick it), turning a lone .conf into a .conflist, keeps it there when
 * another CNI rewrites the file, and removes itself cleanly.
 */
import { copyFileSync, chmodSync, existsSync, readFileSync, readdirSync, renameSync, rmSync, watch, writeFileSync, type FSWatcher } from 'node:fs';
import { basename, join } from 'node:path';
import { ActionableError } from '../common/errors.js';
import type { Logger } from '../common/log.js';

export const PLUGIN_TYPE = 'flb-cni';

type Json = Record<string, unknown>;
interface Conflist extends Json {
  plugins: Json[];
}

export interface InstallOptions {
  confDir: string;
  binDir: string;
  /** The built plugin (cni/plugin/build/flb-cni), copied into binDir. */
  pluginBinary: string;
  log: Logger;
}

/** A problem with the node's CNI configuration or the plugin binary: reported as a CLI failure (exit 1). */
export class InstallError extends ActionableError {}

const CONFIG_EXTENSIONS = ['.conf', '.conflist', '.json'];

/** The configuration file the runtime uses: the first by name with a CNI config extension. */
export function activeConfigFile(confDir: string): string | undefined {
  const files = readdirSync(confDir)
    .filter((f) => CONFIG_EXTENSIONS.some((e) => f.endsWith(e)))
    .sort();
  return files[0] ? join(confDir, files[0]) : undefined;
}

function parse(file: string): Json {
  let data: unknown;
  try {
    data = JSON.parse(readFileSync(file, 'utf8'));
  } catch (error) {
    throw new InstallError(`${file} is not valid JSON (${(error as Error).message}); fix or remove it, the node's CNI configuration is broken`);
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data)) throw new InstallError(`${file} is not a CNI network configuration (not an object)`);
  return data as Json;
}

/** A lone plugin config (.conf) as the equivalent one-plugin list. */
export function toConflist(config: Json): Conflist {
  if (Array.isArray(config.plugins)) return config as Conflist;
  if (typeof config.type !== 'string') throw new InstallError('the network configuration has neither "plugins" nor a plugin "type"');
  const { cniVersion, name, ...plugin } = config;
  return { ...(cniVersion !== undefined ? { cniVersion } : {}), ...(name !== undefined ? { name } : {}), plugins: [plugin] };
}

/** The list with our plugin last (chained after the interface plugins); unchanged if it is there already. */
export function withPlugin(list: Conflist): Conflist {
  if (list.plugins.some((p) => p.type === PLUGIN_TYPE)) return list;
  return { ...list, plugins: [...list.plugins, { type: PLUGIN_TYPE }] };
}

export function withoutPlugin(list: Conflist): Conflist {
  return { ...list, plugins: list.plugins.filter((p) => p.type !== PLUGIN_TYPE) };
}

function writeAtomically(file: string, content: string): void {
  writeFileSync(`${file}.flb-tmp`, content);
  renameSync(`${file}.flb-tmp`, file);
}

/** One pass: binary in place, plugin chained into the active configuration. Returns the file and whether it changed. */
export function installOnce(options: InstallOptions): { file: string; changed: boolean } {
  if (!existsSync(options.pluginBinary)) throw new InstallError(`the plugin binary ${options.pluginBinary} does not exist; run 'npm run setup' to build it`);
  const target = join(options.binDir, PLUGIN_TYPE);
  if (!existsSync(target) || !readFileSync(target).equals(readFileSync(options.pluginBinary))) {
    copyFileSync(options.pluginBinary, `${target}.flb-tmp`);
    chmodSync(`${target}.flb-tmp`, 0o755);
    renameSync(`${target}.flb-tmp`, target);
  }
  const file = activeConfigFile(options.confDir);
  if (!file) throw new InstallError(`no CNI network configuration in ${options.confDir} yet; the primary CNI must be installed first (will retry)`);
  const original = parse(file);
  const updated = withPlugin(toConflist(original));
  const isList = Array.isArray(original.plugins);
  if (isList && JSON.stringify(updated) === JSON.stringify(original)) return { file, changed: false };
  // A lone .conf becomes a .conflist of the same name; the .conf goes, so the runtime sees one config.
  const out = isList ? file : join(options.confDir, `${basename(file).replace(/\.(conf|json)$/, '')}.conflist`);
  writeAtomically(out, `${JSON.stringify(updated, null, 2)}\n`);
  if (out !== file) rmSync(file);
  options.log.info({ file: out }, 'flb-cni chained into the CNI configuration');
  return { file: out, changed: true };
}

/** Removes the plugin from every configuration in the directory and the binary. */
export function uninstall(options: Pick<InstallOptions, 'confDir' | 'binDir' | 'log'>): string[] {
  const changed: string[] = [];
  for (const f of readdirSync(options.confDir).filter((f) => f.endsWith('.conflist'))) {
    const file = join(options.confDir, f);
    let list: Conflist;
    try {
      list = toConflist(parse(file));
    } catch {
      continue; // not ours to judge
    }
    if (!list.plugins.some((p) => p.type === PLUGIN_TYPE)) continue;
    writeAtomically(file, `${JSON.stringify(withoutPlugin(list), null, 2)}\n`);
    changed.push(file);
  }
  rmSync(join(options.binDir, PLUGIN_TYPE), { force: true });
  options.log.info({ files: changed }, 'flb-cni removed from the CNI configuration');
  return changed;
}

/** Installs, then re-installs whenever the configuration directory changes (another CNI rewrote it). */
export function installAndWatch(options: InstallOptions, onError: (error: Error) => void = () => {}): { close(): void } {
  let timer: NodeJS.Timeout | undefined;
  const pass = () => {
    try {
      installOnce(options);
    } catch (error) {
      onError(error as Error);
      options.log.warn({ err: error }, 'CNI install pass failed; will retry on the next change');
    }
  };
  pass();
  const watcher: FSWatcher = watch(options.confDir, () => {
    clearTimeout(timer);
    // Writers often write in several steps; settle first.
    timer = setTimeout(pass, 100);
  });
  // A slow periodic pass as well: inotify misses a directory that is replaced as a whole.
  const periodic = setInterval(pass, 30_000);
  return {
    close() {
      clearTimeout(timer);
      clearInterval(periodic);
      watcher.close();
    },
  };
}
