// Bundles the sidecar's run-time code (dist/sidecar/main.js and its dependencies) into one file,
// dist/sidecar.bundle.mjs, which `flb sidecar` loads when it is there: one module instead of
// ~250 saves about 14 MiB of memory per sidecar. The init container's `flb iptables` gets one too
// (dist/iptables.bundle.mjs), for its start-up CPU. Run by `npm run build` after tsc.
import { build } from 'esbuild';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

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

const bundled = (entry, outfile) =>
  build({
    entryPoints: [entry],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    minifyWhitespace: true,
    minifySyntax: true,
    plugins: [unusedParts],
    // CommonJS dependencies (pino, prom-client) call require(); give the ES module one.
    banner: { js: "import { createRequire as __flbCreateRequire } from 'node:module'; const require = __flbCreateRequire(import.meta.url);" },
    logLevel: 'warning',
  });

await bundled('dist/sidecar/main.js', 'dist/sidecar.bundle.mjs');
// The init container's `flb iptables apply`: one module loads in a third of the CPU time of the
// full CLI's, on every injected pod's start path (cni/init-main.ts).
await bundled('dist/cni/init-main.js', 'dist/iptables.bundle.mjs');
