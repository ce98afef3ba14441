// Bundles the sidecar's run-time code (dist/sidecar/main.js and its dependencies) into one file,
// which `flb sidecar` loads when it is there: one module instead of ~250 saves about 14 MiB of
// memory per sidecar. The init container's `flb iptables` gets one too, for its start-up CPU. Run
// by `npm run build` after tsc.
//
// Each bundle starts from V8's code cache: dist/NAME.bundle.mjs (what bin/flb.js imports) is a
// small loader that compiles dist/NAME.bundle.cjs with the cache made here after running its top
// level, so neither the 1 MB of source is parsed nor the functions its top level runs (zod and the
// contract's schemas, pino, prom-client) are compiled again on every pod's start: importing the
// sidecar bundle took 80 ms of CPU, 40 with the cache. V8 takes a cache only under the flags it was
// made with (NODE_OPTIONS too), so one is made per flag set a pod runs with: none (flb-init) and
// the mesh's default sidecar nodeOptions; under other flags the loader compiles as before.
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defaultMesh } from '../dist/common/contract/mesh.js';

const zodLocales = join(dirname(createRequire(import.meta.url).resolve('zod/package.json')), 'v4', 'locales');

/**
 * Parts of dependencies the sidecar never runs, replaced in its bundle only (each costs memory in
 * every sidecar, as source text V8 keeps and as the Node built-ins they load):
 * - zod's ~45 message locales (40 % of the bundle; zod's `z` namespace re-exports them all, so
 *   they cannot be tree-shaken): only English, zod's default, stays.
 * - prom-client's Pushgateway (loads https, zlib) and cluster aggregator (loads cluster,
 *   child_process): the sidecar is scraped, alone.
 */
const unusedParts = {
  name: 'flb-unused-parts',
  setup(b) {
    b.onResolve({ filter: /^\.\.\/locales\/index\.js$/ }, (args) =>
      args.importer.includes(`${'/'}zod${'/'}`) ? { path: 'zod-locales', namespace: 'flb-stub' } : undefined,
    );
    b.onResolve({ filter: /^\.\/lib\/(pushgateway|cluster)$/ }, (args) =>
      args.importer.includes('/prom-client/') ? { path: `prom-client-${args.path.slice(6)}`, namespace: 'flb-stub' } : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: 'flb-stub' }, (args) => {
      if (args.path === 'zod-locales')
        return { contents: `export { default as en } from ${JSON.stringify(join(zodLocales, 'en.js'))};`, resolveDir: zodLocales };
      const name = args.path.slice('prom-client-'.length);
      return { contents: `module.exports = class { constructor() { throw new Error('prom-client ${name} is not in the sidecar bundle'); } };`, loader: 'js' };
    });
  },
};

/**
 * The bundle as one function of CommonJS's arguments, the file itself (no wrapper to concatenate
 * at load): the loader compiles it with vm.Script, the one compiler Node 20 takes a code cache
 * for. import.meta.url is the bundle's own URL, as it was in the ES module bundle beside it.
 */
const bundled = (entry, name) =>
  build({
    entryPoints: [entry],
    outfile: `dist/${name}.bundle.cjs`,
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    minifyWhitespace: true,
    minifySyntax: true,
    plugins: [unusedParts],
    define: { 'import.meta.url': '__flbBundleUrl' },
    // import() inside vm.Script needs --experimental-vm-modules on Node 20: what is loaded on first
    // use (node:http2, yaml) is required then instead.
    supported: { 'dynamic-import': false },
    banner: {
      js: '(function (exports, require, module, __filename, __dirname) { "use strict"; const __flbBundleUrl = require("node:url").pathToFileURL(__filename).href;',
    },
    footer: { js: '})' },
    logLevel: 'warning',
  });

/**
 * The loader's code: compiles the bundle with the code cache for this process's flags (its file
 * named by them) when there is one, and runs its top level. The cache maker runs the same code,
 * then saves what V8 compiled by then, the top level's functions included.
 */
const compileAndRun = (name) => `
const bundleUrl = new URL('./${name}.bundle.cjs', import.meta.url);
const bundlePath = fileURLToPath(bundleUrl);
const flags = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\\s+/)].filter(Boolean);
const key = flags.length ? ['node', ...flags].join(' ').replace(/[^A-Za-z0-9=.,_-]+/g, '_') : 'no-flags';
let cachedData;
try {
  cachedData = readFileSync(new URL(\`./${name}.bundle.v8/\${key}.cache\`, import.meta.url));
} catch {
  // No cache for these flags: compiled as any module is.
}
const script = new Script(readFileSync(bundlePath, 'utf8'), {
  filename: bundlePath,
  ...(cachedData ? { cachedData } : {}),
});
const bundle = { exports: {} };
script.runInThisContext()(bundle.exports, createRequire(bundlePath), bundle, bundlePath, dirname(bundlePath));
/** Whether this process's start came from the code cache: 'accepted', 'rejected' (made by another Node or under other flags) or 'none'. */
export const codeCache = cachedData ? (script.cachedDataRejected ? 'rejected' : 'accepted') : 'none';
`;
const loaderImports = `import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Script } from 'node:vm';
`;

/**
 * The bundle, its loader, and a code cache per flag set, each made by a Node started with those
 * flags running the loader's own code (so the cache is of the script the loader compiles).
 */
async function bundleWithCache(entry, name, flagSets) {
  await bundled(entry, name);
  const loaderUrl = new URL(`../dist/${name}.bundle.mjs`, import.meta.url).href;
  const cacheDir = fileURLToPath(new URL(`../dist/${name}.bundle.v8/`, import.meta.url));
  rmSync(cacheDir, { recursive: true, force: true });
  mkdirSync(cacheDir);
  const work = mkdtempSync(join(tmpdir(), 'flb-bundle-'));
  let names;
  try {
    const maker = join(work, 'make-cache.mjs');
    writeFileSync(
      maker,
      `${loaderImports}import { writeFileSync } from 'node:fs';
${compileAndRun(name).replaceAll('import.meta.url', JSON.stringify(loaderUrl))}
writeFileSync(${JSON.stringify(cacheDir)} + key + '.cache', script.createCachedData());
process.stdout.write(JSON.stringify(Object.keys(bundle.exports)));
`,
    );
    for (const flags of flagSets)
      names = JSON.parse(execFileSync(process.execPath, [...flags, maker], { env: { ...process.env, NODE_OPTIONS: '' }, encoding: 'utf8' }));
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  const header = `// Generated by scripts/bundle.mjs: runs ${name}.bundle.cjs from V8's code cache made for this process's flags, if there is one (see there).\n`;
  writeFileSync(new URL(loaderUrl), `${header}${loaderImports}${compileAndRun(name)}export const { ${names.join(', ')} } = bundle.exports;\n`);
}

const sidecarNodeOptions = defaultMesh().sidecar.nodeOptions.split(/\s+/).filter(Boolean);
await bundleWithCache('dist/sidecar/main.js', 'sidecar', [[], sidecarNodeOptions]);
// The init container's `flb iptables apply`: one module loads in a third of the CPU time of the
// full CLI's, on every injected pod's start path (cni/init-main.ts).
await bundleWithCache('dist/cni/init-main.js', 'iptables', [[]]);
