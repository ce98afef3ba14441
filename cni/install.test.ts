import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { mkdtempSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync, existsSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../common/log.js';
import { InstallError, installAndWatch, installOnce, uninstall } from './install.js';

const log = createLogger('install-test', 'silent');
const calico = {
  cniVersion: '1.0.0',
  name: 'k8s-pod-network',
  plugins: [
    { type: 'calico', ipam: { type: 'calico-ipam' } },
    { type: 'portmap', capabilities: { portMappings: true } },
  ],
};

describe('the CNI installer', () => {
  let dir: string;
  let confDir: string;
  let binDir: string;
  let pluginBinary: string;
  const options = () => ({ confDir, binDir, pluginBinary, log });
  const read = (f: string) => JSON.parse(readFileSync(join(confDir, f), 'utf8')) as { plugins: { type: string }[] };

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'flb-cni-install-'));
    confDir = join(dir, 'net.d');
    binDir = join(dir, 'bin');
    mkdirSync(confDir);
    mkdirSync(binDir);
    pluginBinary = join(dir, 'flb-cni.build');
    writeFileSync(pluginBinary, '#!/bin/sh\n');
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('chains the plugin last into the first conflist, copies the binary, and a second install changes nothing', () => {
    writeFileSync(join(confDir, '10-calico.conflist'), JSON.stringify(calico));
    writeFileSync(join(confDir, '99-loopback.conf'), JSON.stringify({ cniVersion: '1.0.0', name: 'lo', type: 'loopback' }));
    expect(installOnce(options())).toEqual({ file: join(confDir, '10-calico.conflist'), changed: true });
    expect(read('10-calico.conflist').plugins.map((p) => p.type)).toEqual(['calico', 'portmap', 'flb-cni']);
    expect(statSync(join(binDir, 'flb-cni')).mode & 0o777).toBe(0o755);
    expect(installOnce(options())).toEqual({ file: join(confDir, '10-calico.conflist'), changed: false });
    expect(read('99-loopback.conf')).toEqual({ cniVersion: '1.0.0', name: 'lo', type: 'loopback' });
  });

  it('turns a lone .conf into a .conflist', () => {
    writeFileSync(join(confDir, '10-bridge.conf'), JSON.stringify({ cniVersion: '0.4.0', name: 'bridge-net', type: 'bridge', bridge: 'cni0' }));
    installOnce(options());
    expect(readdirSync(confDir)).toEqual(['10-bridge.conflist']);
    expect(read('10-bridge.conflist')).toEqual({ cniVersion: '0.4.0', name: 'bridge-net', plugins: [{ type: 'bridge', bridge: 'cni0' }, { type: 'flb-cni' }] });
  });

  it('puts itself back when another CNI rewrites the file', async () => {
    writeFileSync(join(confDir, '10-calico.conflist'), JSON.stringify(calico));
    const watcher = installAndWatch(options());
    try {
      writeFileSync(join(confDir, '10-calico.conflist'), JSON.stringify({ ...calico, name: 'rewritten' }));
      const deadline = Date.now() + 3000;
      while (Date.now() < deadline && !read('10-calico.conflist').plugins.some((p) => p.type === 'flb-cni')) await new Promise((r) => setTimeout(r, 50));
      expect(read('10-calico.conflist')).toMatchObject({ name: 'rewritten', plugins: [{ type: 'calico' }, { type: 'portmap' }, { type: 'flb-cni' }] });
    } finally {
      watcher.close();
    }
  });

  it('uninstalls cleanly: the configuration as it was, and no binary', () => {
    writeFileSync(join(confDir, '10-calico.conflist'), JSON.stringify(calico));
    installOnce(options());
    expect(uninstall(options())).toEqual([join(confDir, '10-calico.conflist')]);
    expect(read('10-calico.conflist')).toEqual(calico);
    expect(existsSync(join(binDir, 'flb-cni'))).toBe(false);
  });

  it('refuses a malformed configuration with a clear error and writes nothing', () => {
    writeFileSync(join(confDir, '10-broken.conflist'), '{"plugins": [');
    expect(() => installOnce(options())).toThrow(InstallError);
    expect(() => installOnce(options())).toThrow(/10-broken.conflist is not valid JSON .*the node's CNI configuration is broken/);
    expect(readFileSync(join(confDir, '10-broken.conflist'), 'utf8')).toBe('{"plugins": [');
    expect(readdirSync(confDir)).toEqual(['10-broken.conflist']);
  });

  it('waits for the primary CNI when there is no configuration yet', () => {
    expect(() => installOnce(options())).toThrow(/no CNI network configuration .* the primary CNI must be installed first/);
  });
});
