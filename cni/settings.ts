import { readFileSync } from 'node:fs';
// The contract's modules one by one, not its index: every injected pod's init container loads this,
// and the index would run the top level of every schema module (the bridge's, the catalog's...).
import { InterceptionSchema, type Interception } from '../common/contract/interception.js';
import { parseDocument } from '../common/contract/validate.js';
import { ActionableError } from '../common/errors.js';

/**
 * The interception settings `flb iptables` works from: --settings (JSON, or @file), else the
 * FLB_INTERCEPTION variable the injector gives the init container, else the mesh defaults.
 */
export function loadInterception(settings: string | undefined, env: NodeJS.ProcessEnv = process.env): Interception {
  let text: string | undefined = settings;
  let source = '--settings';
  if (settings?.startsWith('@')) {
    try {
      text = readFileSync(settings.slice(1), 'utf8');
    } catch (error) {
      throw new ActionableError(`cannot read ${settings.slice(1)}: ${(error as Error).message}`);
    }
    source = settings.slice(1);
  } else if (settings === undefined && env.FLB_INTERCEPTION) {
    text = env.FLB_INTERCEPTION;
    source = 'FLB_INTERCEPTION';
  }
  if (text === undefined) return InterceptionSchema.parse({ version: 1, mode: 'iptables' });
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (error) {
    throw new ActionableError(
      `${source} is not JSON: ${(error as Error).message}`,
      'it holds the flomesh.io/interception settings, e.g. {"version":1,"mode":"iptables"}',
    );
  }
  return parseDocument(InterceptionSchema, data, source);
}
