import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';
import { fileURLToPath } from 'node:url';

export interface OriginalDestination {
  address: string;
  port: number;
  family: 4 | 6;
}

interface Addon {
  originalDestination(fd: number): OriginalDestination;
}

/**
 * Where scripts/setup.sh builds the addon, seen from the sources (sidecar/native), the build
 * (dist/sidecar/native) and the sidecar bundle (dist/sidecar.bundle.mjs).
 */
function addonPath(): string {
  for (const candidate of ['./build/original-dst.node', '../../../sidecar/native/build/original-dst.node', '../sidecar/native/build/original-dst.node']) {
    const path = fileURLToPath(new URL(candidate, import.meta.url));
    if (existsSync(path)) return path;
  }
  throw new Error("the original-destination addon is not built: run 'npm run setup' (it compiles sidecar/native/original_dst.c with gcc)");
}

let addon: Addon | undefined;

/** The destination a redirected connection was meant for (SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST). */
export function originalDestination(socket: Socket): OriginalDestination {
  addon ??= createRequire(import.meta.url)(addonPath()) as Addon;
  // net.Socket exposes no public fd; its libuv handle has it.
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (fd === undefined || fd < 0) throw new Error('the socket has no file descriptor (closed, or not a TCP socket)');
  return addon.originalDestination(fd);
}
