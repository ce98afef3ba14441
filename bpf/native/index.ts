import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/** The cgroup hooks the loader attaches, by the names bpf/native/bpf.c knows them. */
export type AttachType =
  'connect4' | 'connect6' | 'sockops' | 'getsockopt' | 'getpeername4' | 'getpeername6' | 'sendmsg4' | 'sendmsg6' | 'recvmsg4' | 'recvmsg6';

/** The loader's bpf() calls (bpf/native/bpf.c). Failures throw an Error with `errno` and the path in the message. */
export interface BpfAddon {
  /** A bpf_link from the pinned program to the cgroup (always multi-attach), pinned at linkPin. */
  attachCgroup(programPin: string, cgroupPath: string, attachType: AttachType, linkPin: string): void;
  /** Detaches the pinned link at once, even if another process holds it open. */
  detachLink(linkPin: string): void;
  mapUpdate(mapPin: string, key: Buffer, value: Buffer): void;
  /** Whether there was such an entry. */
  mapDelete(mapPin: string, key: Buffer): boolean;
  mapKeys(mapPin: string, keySize: number): Buffer[];
  /** The cookie BPF programs see for the network namespace at this path (SO_NETNS_COOKIE), and its interfaces' addresses. */
  netnsInfo(netnsPath: string): { cookie: bigint; addresses: string[] };
}

const ADDON = 'flb-bpf.node';

/**
 * Where scripts/build-native.sh builds it, seen from the sources (bpf/native) and the build
 * (dist/bpf/native). FLB_NATIVE_BUILD=asan loads the AddressSanitizer and UBSan build (build/asan/)
 * that scripts/test.sh runs the eBPF tests against; it loads only with libasan preloaded.
 */
export function addonPath(): string | undefined {
  const build = process.env.FLB_NATIVE_BUILD ? `build/${process.env.FLB_NATIVE_BUILD}` : 'build';
  for (const candidate of [`./${build}/${ADDON}`, `../../../bpf/native/${build}/${ADDON}`]) {
    const path = fileURLToPath(new URL(candidate, import.meta.url));
    if (existsSync(path)) return path;
  }
  return undefined;
}

let addon: BpfAddon | undefined;

export function loadAddon(): BpfAddon {
  if (addon) return addon;
  const path = addonPath();
  if (!path)
    throw new Error(
      `the eBPF loader's addon is not built in bpf/native/${process.env.FLB_NATIVE_BUILD ? `build/${process.env.FLB_NATIVE_BUILD}` : 'build'}: run 'bash scripts/build-native.sh' (it compiles bpf/native/*.c with gcc)`,
    );
  addon = createRequire(import.meta.url)(path) as BpfAddon;
  return addon;
}
