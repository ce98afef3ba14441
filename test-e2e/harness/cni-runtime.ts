// Moved to devenv/cni.ts; this re-export goes once every importer uses the new path.
export * from '../../devenv/cni.js';
