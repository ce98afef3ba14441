import { describe, expect, it } from '@jest/globals';
import { effectiveCapabilities, setprivArgs } from './containers.js';
import { containerArgv, DEMO_IMAGE, ImagePullError, MESH_IMAGE } from './images.js';

describe('container security', () => {
  it('drops everything the spec drops and adds what it adds, as containerd does', () => {
    expect(effectiveCapabilities({ capabilities: { drop: ['ALL'], add: ['NET_ADMIN', 'NET_RAW'] } })).toEqual(['net_admin', 'net_raw']);
    expect(effectiveCapabilities({ capabilities: { drop: ['NET_RAW'] } })).not.toContain('net_raw');
    expect(effectiveCapabilities(undefined)).toContain('chown');
    expect(effectiveCapabilities({ privileged: true })).toBe('all');
  });

  it('limits root by the bounding set and gives another user its capabilities as ambient ones', () => {
    const root = setprivArgs({ uid: 0, gid: 0, supplementaryGroups: [], capabilities: ['net_admin'], noNewPrivileges: true });
    expect(root).toEqual(['--reuid=0', '--regid=0', '--clear-groups', '--inh-caps', '-all', '--bounding-set', '-all,+net_admin', '--no-new-privs']);
    const proxy = setprivArgs({ uid: 1500, gid: 1500, supplementaryGroups: [7], capabilities: [], noNewPrivileges: false });
    expect(proxy).toEqual(['--reuid=1500', '--regid=1500', '--groups=7', '--inh-caps', '-all', '--bounding-set', '-all', '--ambient-caps', '-all']);
  });
});

describe('images', () => {
  it("runs this checkout's flb for the mesh image and the demo program for the demo image", () => {
    expect(containerArgv(MESH_IMAGE, ['flb', 'sidecar'], undefined).slice(1)).toEqual([expect.stringMatching(/bin\/flb\.js$/), 'sidecar']);
    expect(containerArgv(DEMO_IMAGE, undefined, ['client', '--url', 'http://echo/']).slice(1)).toEqual([
      expect.stringMatching(/demo\.js$/),
      'client',
      '--url',
      'http://echo/',
    ]);
    expect(containerArgv(DEMO_IMAGE, undefined, undefined).at(-1)).toBe('echo');
    expect(containerArgv(MESH_IMAGE, ['sh', '-c', 'true'], undefined)).toEqual(['sh', '-c', 'true']);
  });

  it('fails an image it does not have the way a pull fails, naming the ones it has', () => {
    expect(() => containerArgv('nginx:latest', undefined, undefined)).toThrow(ImagePullError);
    expect(() => containerArgv('flomesh/flb-mesh:latest', undefined, undefined)).toThrow(/Failed to pull image "flomesh\/flb-mesh:latest".*flomesh\/flb-mesh:/);
  });
});
