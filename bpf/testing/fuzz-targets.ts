// Fuzz targets of bpf/loader.ts (run by common/testing/fuzz.ts; see bpf/fuzz.test.ts).
//
// - mountinfo: any bytes as a mount table, the host's (hostCgroup, under /host) and the agent's own
//   (defaultCgroup, mountOf). The agent reads the host's /proc/1/mountinfo, which a kernel writes,
//   but a node's agent must not stop on a table it does not expect: no throw, and what it picks is
//   a cgroup2 mount of that table under the host root, or a reason naming what the host mounts.
import assert from 'node:assert/strict';
import { join, posix } from 'node:path';
import type fc from 'fast-check';
import { fuzzInputs, utf8 } from '../../common/testing/fuzz-inputs.js';
import type { FuzzCheck, FuzzTarget } from '../../common/testing/fuzz-runner.js';
import { defaultCgroup, hostCgroup, mountOf, parseMountinfo } from '../loader.js';

const HOST_ROOT = '/host';

function mountinfoLines(check: FuzzCheck): fc.Arbitrary<Uint8Array> {
  const path = check
    .array(check.constantFrom('sys', 'fs', 'cgroup', 'unified', 'run', 'cilium', 'cgroupv2', 'a\\040b', '..', '', 'x#y'), { maxLength: 5 })
    .map((parts) => `/${parts.join('/')}`);
  const fsType = check.constantFrom('cgroup2', 'cgroup', 'tmpfs', 'bpf', 'overlay', '', '-');
  const line = check
    .tuple(
      check.nat(4000),
      check.nat(4000),
      path,
      path,
      check.constantFrom('rw', 'ro,nosuid', ''),
      check.constantFrom('', ' shared:4', ' master:4 unbindable'),
      fsType,
    )
    .map(
      ([id, parent, root, at, options, optional, type]) => `${id} ${parent} 0:${id % 64} ${root} ${at} ${options}${optional} - ${type} ${type || 'none'} rw`,
    );
  return check.array(line, { maxLength: 12 }).map((lines) => utf8(lines.join('\n')));
}

function run(input: Uint8Array): void {
  const mounts = parseMountinfo(new TextDecoder().decode(input));
  const found = hostCgroup(mounts, HOST_ROOT);
  const cgroup2 = mounts.filter((m) => m.fsType === 'cgroup2');
  if ('missing' in found) {
    const plain = cgroup2.filter((m) => m.mountPoint.startsWith('/') && posix.normalize(m.mountPoint) === m.mountPoint);
    assert.deepEqual(plain, [], 'a cgroup2 mount at a plain path was there but none was picked');
    assert.match(found.missing, /^a cgroup v2 hierarchy: the host mounts (only cgroup v1 \(|no cgroup filesystem;)/);
  } else {
    assert.ok(
      cgroup2.some((m) => m.mountPoint === found.hostPath),
      `picked ${found.hostPath}, not a cgroup2 mount`,
    );
    assert.equal(found.path, join(HOST_ROOT, found.hostPath));
    assert.ok(found.path === HOST_ROOT || found.path.startsWith(`${HOST_ROOT}/`), `${found.path} is outside ${HOST_ROOT}`);
  }
  const own = defaultCgroup(mounts);
  if (own !== undefined) assert.ok(mountOf(mounts, own), `${own} is on no mount of the table it came from`);
}

export const fuzzTargets: Record<string, FuzzTarget> = {
  mountinfo: { run, inputs: (check, seeds) => fuzzInputs(check, seeds, mountinfoLines(check)) },
};
