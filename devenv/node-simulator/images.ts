// The node simulator's "images": names that map to programs of this checkout instead of layers
// pulled from a registry. The mesh and control plane images run this checkout's `flb` (its iptables
// use is the host's iptables, inside the pod's network namespace); the demo image runs the demo
// apps. Anything else fails the way a kubelet fails an image it cannot pull.
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
/** This checkout, whether running from sources or from dist/. */
export const CHECKOUT = ROOT.endsWith('/dist') ? dirname(ROOT) : ROOT;
export const VERSION = (JSON.parse(readFileSync(join(CHECKOUT, 'package.json'), 'utf8')) as { version: string }).version;

export const MESH_IMAGE = `flomesh/flb-mesh:${VERSION}`;
/** The control plane's image (images/Dockerfile's control-plane target): the same `flb`. */
export const CONTROL_PLANE_IMAGE = `flomesh/flb-mesh-control-plane:${VERSION}`;
export const DEMO_IMAGE = `flomesh/flb-demo:${VERSION}`;

interface Image {
  entrypoint: string[];
  cmd: string[];
  /** Executables the image has that are this checkout's programs. */
  programs: Record<string, string[]>;
}

const IMAGES: Record<string, Image> = {
  [MESH_IMAGE]: {
    entrypoint: ['flb'],
    cmd: ['--help'],
    programs: { flb: [process.execPath, join(CHECKOUT, 'bin/flb.js')] },
  },
  [CONTROL_PLANE_IMAGE]: {
    entrypoint: ['flb'],
    cmd: ['--help'],
    programs: { flb: [process.execPath, join(CHECKOUT, 'bin/flb.js')] },
  },
  [DEMO_IMAGE]: {
    entrypoint: ['flb-demo'],
    cmd: ['echo'],
    programs: { 'flb-demo': [process.execPath, join(CHECKOUT, 'dist/devenv/apps/demo.js')] },
  },
};

export class ImagePullError extends Error {
  override name = 'ImagePullError';
}

export const knownImages = (): string[] => Object.keys(IMAGES);

/**
 * The argv a container runs: `command` replaces the image's entrypoint and `args` its cmd, as in
 * Kubernetes; an executable the image provides maps to the checkout's program, others are the
 * host's (the images are Debian-based, so sh, cat and friends are there).
 */
export function containerArgv(image: string, command: string[] | undefined, args: string[] | undefined): string[] {
  const known = IMAGES[image];
  if (!known) {
    throw new ImagePullError(`Failed to pull image "${image}": the node simulator runs only images built from this checkout (${knownImages().join(', ')})`);
  }
  const argv = command && command.length > 0 ? [...command, ...(args ?? [])] : [...known.entrypoint, ...(args ?? known.cmd)];
  const program = known.programs[argv[0]!];
  return program ? [...program, ...argv.slice(1)] : argv;
}
