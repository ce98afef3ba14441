export * from './primitives.js';
export * from './validate.js';
export * from './mesh.js';
export * from './catalog.js';
export * from './interception.js';
export * from './sidecar.js';
export * from './identity.js';
export * from './annotations.js';
