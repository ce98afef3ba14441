// Moved to devenv/ (the development environment that `flb demo` and the tests share); this re-export goes once every importer uses the new path.
export * from '../../devenv/processes.js';
