// Two projects: unit tests run in parallel workers; end-to-end tests start real servers
// (kube-apiserver, etcd, ...) that each want most of a core, so scripts/test.sh runs them
// in band with long timeouts. ESM throughout: jest runs with --experimental-vm-modules.
const swc = [
  '@swc/jest',
  {
    jsc: { parser: { syntax: 'typescript' }, target: 'es2023' },
    module: { type: 'es6' },
    sourceMaps: 'inline',
  },
];
const common = {
  extensionsToTreatAsEsm: ['.ts'],
  transform: { '^.+\\.ts$': swc },
  // Sources import './x.js' as Node's ESM resolution requires; jest resolves the .ts file.
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  testEnvironment: 'node',
  modulePathIgnorePatterns: ['<rootDir>/dist/'],
};

export default {
  projects: [
    {
      ...common,
      displayName: 'unit',
      testMatch: ['<rootDir>/{cli,common,devenv,injector,sidecar,cni,bpf,registry-bridge,repo,diagnostics,scripts}/**/*.test.ts'],
    },
    {
      ...common,
      displayName: 'e2e',
      testMatch: ['<rootDir>/test-e2e/**/*.test.ts'],
      setupFilesAfterEnv: ['<rootDir>/test-e2e/harness/jest-setup.ts'],
    },
  ],
};
