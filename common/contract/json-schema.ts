import { z } from 'zod';
import { BridgeConfigSchema } from './bridge.js';
import { ServiceSchema } from './catalog.js';
import { InterceptionSchema } from './interception.js';
import { MeshSchema } from './mesh.js';
import { SidecarConfigSchema } from './sidecar.js';

/**
 * JSON Schemas of the contract for consumers that are not TypeScript (a PipyJS sidecar, editors,
 * other tools). Generated from the zod schemas; checks that need code (duplicates, VIP ranges)
 * are not expressible there and stay in the zod schemas.
 */
export const JSON_SCHEMA_FILES = {
  'mesh.schema.json': MeshSchema,
  'service.schema.json': ServiceSchema,
  'sidecar.schema.json': SidecarConfigSchema,
  'interception.schema.json': InterceptionSchema,
  'bridge.schema.json': BridgeConfigSchema,
} as const;

export function generateJsonSchemas(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [file, schema] of Object.entries(JSON_SCHEMA_FILES)) {
    // io 'input': the schema describes what an author may write (fields with defaults are optional).
    const json = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any', target: 'draft-2020-12' });
    out[file] = `${JSON.stringify({ $id: `https://flomesh.io/schemas/flb-mesh/${file}`, ...json }, null, 2)}\n`;
  }
  return out;
}
