// `flb inject`'s runner, between cli.ts (which only parses) and the pure manifests.ts: reads
// manifests from files, folders (as kubectl's -f does) or standard input, writes the injected ones
// to stdout and every warning to stderr.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { V1Namespace } from '@kubernetes/client-node';
import { loadMeshConfig } from '../common/config.js';
import { FLB_MESH_VERSION } from '../common/contract/version.js';
import { ActionableError } from '../common/errors.js';
import type { InjectorSettings } from './inject.js';
import { explain, injectManifests, refusalHint, warningLines, type ManifestVerdict } from './manifests.js';

export interface InjectManifestsOptions {
  /** Files, folders, or `-` for standard input, in the order given. */
  inputs: string[];
  /** Folders: their subfolders too (kubectl's -R). */
  recursive: boolean;
  explain: boolean;
  meshConfig?: string;
  /** Labels of the namespaces the workloads go to. */
  namespaceLabels: Record<string, string>;
  nativeSidecars: boolean;
}

export interface CommandOutput {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  /** Standard input, read whole. */
  stdin: () => string;
}

const processOutput: CommandOutput = { stdout: process.stdout, stderr: process.stderr, stdin: () => readFileSync(0, 'utf8') };

/**
 * `flb inject`: the injected manifests (or, with `explain`, the decisions) on stdout; every warning
 * on stderr; a refusal of any workload fails the command after printing what the others became.
 */
export function injectManifestFiles(options: InjectManifestsOptions, output: CommandOutput = processOutput): void {
  const settings: InjectorSettings = { mesh: loadMeshConfig(options.meshConfig), nativeSidecars: options.nativeSidecars, version: FLB_MESH_VERSION };
  const namespaceFor = (name: string): V1Namespace => ({ metadata: { name, labels: options.namespaceLabels } });
  const documents: string[] = [];
  const verdicts: ManifestVerdict[] = [];
  for (const input of manifestInputs(options.inputs, options.recursive)) {
    const text = input === '-' ? output.stdin() : readManifest(input);
    const injected = injectManifests(text, settings, namespaceFor, input === '-' ? 'standard input' : input);
    if (injected.yaml) documents.push(injected.yaml);
    verdicts.push(...injected.verdicts);
  }
  output.stdout.write(options.explain ? `${explain(verdicts)}\n` : documents.join('---\n'));
  for (const line of warningLines(verdicts)) output.stderr.write(`${line}\n`);
  const refused = verdicts.filter((v) => v.result.action === 'deny');
  if (refused.length) {
    if (!options.explain) output.stderr.write(`${explain(refused)}\n`);
    throw new ActionableError(`${refused.length} workload(s) would be refused by the injector`, refusalHint(refused));
  }
}

const MANIFEST_EXTENSIONS = ['.yaml', '.yml', '.json'];

/**
 * The files to read, as kubectl's -f reads them: a file as given; a folder's .yaml, .yml and .json
 * files in name order, and with `recursive` its subfolders' too, each where its name sorts.
 */
export function manifestInputs(inputs: string[], recursive: boolean): string[] {
  return inputs.flatMap((input) => {
    if (input === '-') return [input];
    let isFolder: boolean;
    try {
      isFolder = statSync(input).isDirectory();
    } catch (error) {
      throw new ActionableError(`cannot read ${input}: ${(error as Error).message}`, 'give a manifest file, a folder of them, or - for standard input');
    }
    if (!isFolder) return [input];
    const files = folderManifests(input, recursive);
    if (files.length === 0) {
      throw new ActionableError(
        `${input} holds no .yaml, .yml or .json file${recursive ? '' : ' (its subfolders are not read)'}`,
        recursive ? 'give a folder with manifests' : 'add -R to read its subfolders too',
      );
    }
    return files;
  });
}

function folderManifests(folder: string, recursive: boolean): string[] {
  let entries;
  try {
    entries = readdirSync(folder, { withFileTypes: true });
  } catch (error) {
    throw new ActionableError(`cannot read the folder ${folder}: ${(error as Error).message}`);
  }
  // Byte order, as kubectl walks a folder; a symbolic link to a folder is not followed, as kubectl does not.
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return entries.flatMap((entry) => {
    const path = join(folder, entry.name);
    if (entry.isDirectory()) return recursive ? folderManifests(path, true) : [];
    return MANIFEST_EXTENSIONS.some((ext) => entry.name.endsWith(ext)) ? [path] : [];
  });
}

function readManifest(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    throw new ActionableError(`cannot read ${path}: ${(error as Error).message}`);
  }
}
