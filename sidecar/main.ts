/**
 * What `flb sidecar` needs at run time, in one module: the build bundles it (with its
 * dependencies) into dist/sidecar.bundle.mjs, because a sidecar runs next to every app and a
 * bundle costs about 14 MiB less memory than loading the same code as ~250 separate ES modules
 * (each keeps its own module record and source). See scripts/bundle.mjs.
 */
export { createLogger } from '../common/log.js';
export { sidecarCodebase, sidecarIdFromEnv } from '../common/contract/identity.js';
export { parseDuration } from '../common/duration.js';
export { runSidecar } from './sidecar.js';
