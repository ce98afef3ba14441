import { readFileSync } from 'node:fs';
import YAML from 'yaml';
import { MeshSchema, defaultMesh, parseDocument, type Mesh } from './contract/index.js';
import { ActionableError } from './errors.js';

/** The mesh config from a JSON or YAML file, or the defaults when no file is given. */
export function loadMeshConfig(path?: string): Mesh {
  if (!path) return defaultMesh();
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new ActionableError(`cannot read the mesh config ${path}: ${(error as Error).message}`, 'check the --mesh-config path');
  }
  let data: unknown;
  try {
    data = YAML.parse(text);
  } catch (error) {
    throw new ActionableError(`the mesh config ${path} is neither JSON nor YAML: ${(error as Error).message}`);
  }
  return parseDocument(MeshSchema, data, path);
}
