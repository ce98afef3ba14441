import js from '@eslint/js';
import { createNodeResolver, importX } from 'eslint-plugin-import-x';
import globals from 'globals';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import tseslint from 'typescript-eslint';

/**
 * House rules: what each top-level folder may import, as the "May import" line of its README says.
 * A relative import into any other top-level folder fails lint, quoting that README line. Every
 * top-level folder must be listed (a new one fails here until it has its rule).
 * - `may`: folders it may import (npm packages and Node's built-ins are always allowed).
 * - `files`: single files of other folders it may import, by folder.
 * - `testsAlso`: folders its tests may import too.
 * - `unrestricted`: it may import every part (or has no code to import anything).
 * Tests (`*.test.ts` and `testing/` folders) follow their folder's rule and may also use their own
 * part's `testing/` helpers and `common/testing/`; nothing else imports a `testing/` folder
 * (tsconfig.build.json leaves them out of dist/).
 */
const root = import.meta.dirname;
const NOT_PARTS = new Set(['node_modules', 'dist', 'coverage']);
const topLevelFolders = readdirSync(root, { withFileTypes: true })
  .filter((entry) => entry.isDirectory() && !entry.name.startsWith('.') && !NOT_PARTS.has(entry.name))
  .map((entry) => entry.name);
const partsWithACli = topLevelFolders.filter((folder) => folder !== 'cli' && existsSync(join(root, folder, 'cli.ts')));

export const houseRules = {
  cli: { may: ['common', 'devenv'], files: Object.fromEntries(partsWithACli.map((part) => [part, ['cli.ts']])) },
  common: { may: [] },
  injector: { may: ['common'], files: { cni: ['rules.ts'] } },
  sidecar: { may: ['common'], testsAlso: ['repo'] },
  cni: { may: ['common'], files: { bpf: ['loader.ts'] } },
  bpf: { may: ['common'] },
  'registry-bridge': { may: ['common'] },
  repo: { may: ['common'] },
  diagnostics: { may: ['common'] },
  devenv: { may: ['common'] },
  'test-e2e': { unrestricted: true },
  // No README: benchmarks measure the parts and the development environment together.
  bench: { unrestricted: true },
  // No part's code: the Helm chart, the container images, the build scripts, the `flb` launcher (it runs dist/).
  charts: { unrestricted: true },
  images: { unrestricted: true },
  scripts: { unrestricted: true },
  bin: { unrestricted: true },
};

const unlisted = topLevelFolders.filter((folder) => !(folder in houseRules));
if (unlisted.length)
  throw new Error(`eslint.config.js: no house rule for ${unlisted.join(', ')}: write its README's "May import" line and add it to houseRules`);

/** The README's "May import" paragraph, on one line. */
function mayImportLine(folder) {
  const readme = join(root, folder, 'README.md');
  const line = existsSync(readme) ? /^May import:.*(?:\n.+)*/m.exec(readFileSync(readme, 'utf8'))?.[0] : undefined;
  if (!line) throw new Error(`eslint.config.js: ${folder}/README.md has no "May import:" line for its house rule`);
  return line.replace(/\s*\n\s*/g, ' ');
}

const TEST_FILES = ['**/*.test.ts', '**/testing/**'];
const testingFoldersOf = (folders) => folders.map((folder) => `./${folder}/**/testing/**`);

function restrictedPaths(folder, rule, forTests) {
  const message = `${folder}/README.md says "${mayImportLine(folder)}"`;
  const allowed = new Set([folder, ...rule.may, ...(forTests ? (rule.testsAlso ?? []) : [])]);
  const files = rule.files ?? {};
  const target = `./${folder}`;
  const zones = [];
  const forbidden = topLevelFolders.filter((other) => !allowed.has(other) && !(other in files));
  if (forbidden.length) zones.push({ target, from: forbidden.map((other) => `./${other}`), message });
  for (const [other, except] of Object.entries(files)) if (!allowed.has(other)) zones.push({ target, from: `./${other}`, except, message });
  const testingAllowed = forTests ? [folder, 'common'] : [];
  zones.push({
    target,
    from: testingFoldersOf(topLevelFolders.filter((other) => !testingAllowed.includes(other))),
    message: forTests
      ? `a test may import its own part's testing/ helpers and common/testing/ only`
      : `testing/ folders are for tests only (tsconfig.build.json leaves them out of dist/)`,
  });
  return ['error', { zones, basePath: root }];
}

const houseRuleConfigs = Object.entries(houseRules)
  .filter(([, rule]) => !rule.unrestricted)
  .flatMap(([folder, rule]) => [
    { files: [`${folder}/**`], ignores: TEST_FILES, rules: { 'import-x/no-restricted-paths': restrictedPaths(folder, rule, false) } },
    { files: TEST_FILES.map((pattern) => `${folder}/${pattern}`), rules: { 'import-x/no-restricted-paths': restrictedPaths(folder, rule, true) } },
  ]);

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'coverage/', '**/*.json'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: globals.node },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      'no-console': ['error', { allow: ['error'] }],
      eqeqeq: ['error', 'always', { null: 'ignore' }],
      // Prettier keeps code within 160 columns but cannot break strings; comments are ours to wrap.
      'max-len': ['error', { code: 160, ignoreStrings: true, ignoreTemplateLiterals: true, ignoreRegExpLiterals: true, ignoreUrls: true }],
    },
  },
  {
    // Tests, scripts and the CLI entry print for people on purpose.
    files: ['**/*.test.ts', 'scripts/**', 'bench/**', 'bin/**', 'test-e2e/**', 'devenv/apps/**'],
    rules: { 'no-console': 'off' },
  },
  {
    plugins: { 'import-x': importX },
    settings: {
      // Sources import './x.js' as Node's ESM resolution requires; the file is x.ts.
      'import-x/resolver-next': [createNodeResolver({ extensionAlias: { '.js': ['.ts', '.js'] } })],
    },
    rules: {
      // The house rules pass an import they cannot resolve, so every relative import must resolve.
      'import-x/no-unresolved': ['error', { ignore: ['^[^.]', '/dist/'] }],
    },
  },
  ...houseRuleConfigs,
);
