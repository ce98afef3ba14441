// The flb-mesh release this code belongs to, read from the package's own package.json. The mesh's
// default images carry it as their tag (never `latest`), so an injector injects the sidecar of its
// own release and the kubelet pulls the image that release was tested with.
//
// package.json sits at a different depth depending on what runs: the sources (common/contract/),
// the build (dist/common/contract/) or the sidecar's bundle (dist/). So the folders above this file
// are searched for the package named flb-mesh, and no other package.json is taken for it.
import { readFileSync } from 'node:fs';

const PACKAGE_NAME = 'flb-mesh';

function packageVersion(): string {
  let folder = new URL('./', import.meta.url);
  for (let depth = 0; depth < 5; depth++) {
    try {
      const pkg = JSON.parse(readFileSync(new URL('package.json', folder), 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === PACKAGE_NAME && typeof pkg.version === 'string') return pkg.version;
    } catch {
      // no package.json here, or not ours: look one folder up
    }
    folder = new URL('../', folder);
  }
  return '0.0.0-unknown';
}

/** This release's version, e.g. `0.1.0`. */
export const FLB_MESH_VERSION = packageVersion();

/** The image that runs `flb` (sidecar, init container, CNI validation) of this release. */
export const MESH_IMAGE = `flomesh/flb-mesh:${FLB_MESH_VERSION}`;
