// The BridgeConfig document from a file (YAML or JSON), every problem named by its field.
import { readFileSync } from 'node:fs';
import YAML from 'yaml';
import { BridgeConfigSchema, parseDocument, type BridgeConfig } from '../common/contract/index.js';
import { ActionableError } from '../common/errors.js';

export function loadBridgeConfig(path: string): BridgeConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new ActionableError(`cannot read the bridge config ${path}: ${(error as Error).message}`, 'check the --config path');
  }
  let data: unknown;
  try {
    data = YAML.parse(text);
  } catch (error) {
    throw new ActionableError(`the bridge config ${path} is neither YAML nor JSON: ${(error as Error).message.split('\n')[0]}`);
  }
  return parseDocument(BridgeConfigSchema, data, path);
}
