import { beforeAll, describe, expect, it } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = fileURLToPath(new URL('../', import.meta.url));

interface Snippet {
  /** Where the snippet would live (it is never written: ESLint lints the text as that file). */
  file: string;
  code: string;
}

/**
 * The import rules' messages for each snippet, from one ESLint run in a child process (ESLint
 * loads eslint.config.js itself, as `npm run lint` does).
 */
function lintAsEslintDoes(snippets: Snippet[]): { problems: string[][]; houseRules: Record<string, HouseRule> } {
  const program = `
    import { ESLint } from 'eslint';
    import { readFileSync } from 'node:fs';
    import { pathToFileURL } from 'node:url';
    const eslint = new ESLint({ cwd: process.cwd() });
    const problems = [];
    for (const { file, code } of JSON.parse(readFileSync(0, 'utf8'))) {
      const [result] = await eslint.lintText(code, { filePath: file });
      problems.push(result.messages.filter((m) => m.ruleId?.startsWith('import-x/') || m.fatal).map((m) => m.message));
    }
    const { houseRules } = await import(pathToFileURL('eslint.config.js').href);
    console.log(JSON.stringify({ problems, houseRules }));`;
  const run = spawnSync(process.execPath, ['--input-type=module', '-e', program], { cwd: repoRoot, input: JSON.stringify(snippets), encoding: 'utf8' });
  if (run.status !== 0) throw new Error(`eslint failed: ${run.stderr}`);
  return JSON.parse(run.stdout) as ReturnType<typeof lintAsEslintDoes>;
}

interface HouseRule {
  may?: string[];
  files?: Record<string, string[]>;
  testsAlso?: string[];
  unrestricted?: boolean;
}

/** The README's "May import" paragraph on one line, as the lint message quotes it. */
const mayImport = (folder: string) => /^May import:.*(?:\n.+)*/m.exec(readFileSync(join(repoRoot, folder, 'README.md'), 'utf8'))![0].replace(/\s*\n\s*/g, ' ');
const brokenRule = (folder: string) => `${folder}/README.md says "${mayImport(folder)}"`;

const importOf = (specifier: string) => `import '${specifier}';\n`;

// [importing file, specifier]: each a single import, so each answer is about one line.
const allowed: [string, string][] = [
  ['sidecar/proxy/example.ts', '../../common/log.js'],
  ['injector/vm-installer.ts', '../cni/rules.js'],
  ['cli/example.ts', '../sidecar/cli.js'],
  ['cli/example.ts', '../common/cli.js'],
  ['cli/example.ts', '../common/log.js'],
  ['cli/example.ts', '../devenv/controlplane.js'],
  ['registry-bridge/example.ts', '../common/kube-events.js'],
  ['devenv/example.ts', '../common/probes.js'],
  ['sidecar/config/example.test.ts', '../../repo/server.js'],
  ['sidecar/config/example.test.ts', '../../common/testing/fuzz.js'],
  ['sidecar/dns/example.test.ts', './testing/fixtures.js'],
  ['injector/testing/example.ts', '../../common/testing/fuzz-runner.js'],
  ['test-e2e/example.test.ts', '../injector/inject.js'],
  ['bench/example.ts', '../devenv/controlplane.js'],
];

// [importing file, specifier, the folder whose README line it breaks]
const sideways: [string, string, string][] = [
  ['sidecar/proxy/example.ts', '../../injector/inject.js', 'sidecar'],
  ['sidecar/example.ts', '../repo/repo.js', 'sidecar'],
  ['sidecar/config/example.test.ts', '../../injector/inject.js', 'sidecar'],
  ['injector/vm-installer.ts', '../cni/iptables.js', 'injector'],
  ['injector/example.ts', '../sidecar/dns/table.js', 'injector'],
  ['cli/example.ts', '../sidecar/sidecar.js', 'cli'],
  ['cli/example.ts', '../test-e2e/harness/netns.js', 'cli'],
  ['registry-bridge/example.ts', '../repo/server.js', 'registry-bridge'],
  ['devenv/example.ts', '../test-e2e/harness/netns.js', 'devenv'],
  ['devenv/node-simulator/example.ts', '../../sidecar/cli.js', 'devenv'],
  ['common/example.ts', '../sidecar/cli.js', 'common'],
  ['repo/store/example.ts', '../../sidecar/sidecar.js', 'repo'],
  ['cni/example.ts', '../injector/inject.js', 'cni'],
  ['bpf/example.ts', '../cni/rules.js', 'bpf'],
];

describe('house rules: what each folder may import (eslint.config.js, from the READMEs)', () => {
  let allowedAnswers: string[][];
  let sidewaysAnswers: string[][];
  let formAnswers: string[][];
  let testingAnswers: string[][];
  let unresolvedAnswers: string[][];
  let houseRules: Record<string, HouseRule>;
  beforeAll(() => {
    const forms = [
      "import type { InjectorSettings } from '../injector/inject.js';\nexport type S = InjectorSettings;\n",
      "export const load = () => import('../injector/inject.js');\n",
      "export * from '../injector/inject.js';\n",
      "export { injectPod } from '../injector/inject.js';\n",
    ];
    const testing: Snippet[] = [
      { file: 'sidecar/example.ts', code: importOf('../common/testing/fuzz.js') },
      { file: 'sidecar/example.ts', code: importOf('./dns/testing/fixtures.js') },
      { file: 'sidecar/config/example.test.ts', code: importOf('../../repo/testing/memory-store.js') },
    ];
    const linted = lintAsEslintDoes([
      ...allowed.map(([file, specifier]) => ({ file, code: importOf(specifier) })),
      ...sideways.map(([file, specifier]) => ({ file, code: importOf(specifier) })),
      ...forms.map((code) => ({ file: 'sidecar/example.ts', code })),
      ...testing,
      { file: 'sidecar/example.ts', code: importOf('./no-such-file.js') },
    ]);
    houseRules = linted.houseRules;
    const answers = linted.problems;
    allowedAnswers = answers.splice(0, allowed.length);
    sidewaysAnswers = answers.splice(0, sideways.length);
    formAnswers = answers.splice(0, forms.length);
    testingAnswers = answers.splice(0, testing.length);
    unresolvedAnswers = answers;
  });

  it('lets each folder import what its README allows', () => {
    expect(allowed.map((example, i) => [...example, allowedAnswers[i]])).toEqual(allowed.map((example) => [...example, []]));
  });

  it('fails a sideways import, quoting the README line it breaks', () => {
    expect(sideways.map(([file, specifier], i) => [file, specifier, sidewaysAnswers[i]])).toEqual(
      sideways.map(([file, specifier, folder]) => [file, specifier, [`Unexpected path "${specifier}" imported in restricted zone. ${brokenRule(folder)}`]]),
    );
  });

  it('in every form: type-only import, dynamic import(), export from', () => {
    expect(formAnswers).toEqual(formAnswers.map(() => [expect.stringContaining(brokenRule('sidecar'))]));
  });

  it('keeps testing/ helpers to tests: their own part and common/testing only', () => {
    expect(testingAnswers).toEqual([
      [expect.stringContaining('testing/ folders are for tests only')],
      [expect.stringContaining('testing/ folders are for tests only')],
      [expect.stringContaining("a test may import its own part's testing/ helpers and common/testing/ only")],
    ]);
  });

  it('allows only what the README lines name: each allowed folder, file and test exception is in its line', () => {
    const unnamed = Object.entries(houseRules)
      .filter(([, rule]) => !rule.unrestricted)
      .flatMap(([folder, rule]) => {
        const line = mayImport(folder);
        const named = (text: string) => line.includes(`\`${text}\``);
        const folders = [...(rule.may ?? []), ...(rule.testsAlso ?? [])].filter((other) => !named(`${other}/`));
        const files = Object.entries(rule.files ?? {}).flatMap(([other, names]) =>
          names.filter((name) => !named(`${other}/${name}`) && !line.includes(`each part's \`${name}\``)).map((name) => `${other}/${name}`),
        );
        return [...folders, ...files].map((allowance) => `${folder}: ${allowance}`);
      });
    expect(unnamed).toEqual([]);
  });

  it('fails a relative import it cannot resolve (the rules would not see where it goes)', () => {
    expect(unresolvedAnswers).toEqual([[expect.stringContaining("Unable to resolve path to module './no-such-file.js'")]]);
  });
});

describe('tsconfig.json', () => {
  it('type-checks every top-level folder that holds TypeScript', () => {
    const { include } = JSON.parse(readFileSync(join(repoRoot, 'tsconfig.json'), 'utf8')) as { include: string[] };
    const holdsTypeScript = (dir: string): boolean =>
      readdirSync(dir, { withFileTypes: true }).some((entry) =>
        entry.isDirectory() ? entry.name !== 'node_modules' && holdsTypeScript(join(dir, entry.name)) : entry.name.endsWith('.ts'),
      );
    const folders = readdirSync(repoRoot, { withFileTypes: true })
      .filter((entry) => entry.isDirectory() && !entry.name.startsWith('.') && !['node_modules', 'dist'].includes(entry.name))
      .map((entry) => entry.name)
      .filter((folder) => holdsTypeScript(join(repoRoot, folder)));
    expect(folders).toContain('repo');
    expect(folders.filter((folder) => !include.includes(folder))).toEqual([]);
  });
});
