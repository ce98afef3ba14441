/*
 * `flb sidecar`'s flags as the injector writes them, and the way it starts: bin/flb.js runs it from
 * the sidecar bundle alone (the memory it is bundled for), parser and runner included.
 */
import { describe, expect, it } from '@jest/globals';
import { spawn, spawnSync } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { defaultMesh } from '../common/contract/mesh.js';
import { Command } from 'commander';
import { runCli } from '../common/cli.js';
import { PORT_FLAGS, sidecarCommands, type SidecarRunner } from './cli.js';
import { pino } from 'pino';
import { createLogger } from '../common/log.js';
import { runFlbRecordingFiles } from '../common/testing/loaded-files.js';
import { sidecarOptions, type SidecarArgs } from './runner.js';

const root = fileURLToPath(new URL('..', import.meta.url));

async function parse(...argv: string[]): Promise<{ code: number; args?: SidecarArgs; waited?: unknown }> {
  const seen: { args?: SidecarArgs; waited?: unknown } = {};
  const runner: SidecarRunner = {
    runSidecarProcess: (args) => {
      seen.args = args;
      return Promise.resolve();
    },
    waitForReady: (args) => {
      seen.waited = args;
      return Promise.resolve();
    },
  };
  const program = new Command('flb');
  for (const command of sidecarCommands(() => Promise.resolve(runner))) program.addCommand(command.configureOutput({ writeErr: () => {} }));
  const code = await runCli(program, ['node', 'flb', ...argv]);
  return { code, ...seen };
}

describe('flb sidecar flags', () => {
  it('takes one flag per port of mesh.ports, defaulting to the mesh defaults', async () => {
    expect(PORT_FLAGS).toEqual({
      admin: '--admin-port',
      outbound: '--outbound-port',
      inbound: '--inbound-port',
      metrics: '--metrics-port',
      dns: '--dns-port',
      livenessProbe: '--liveness-probe-port',
      readinessProbe: '--readiness-probe-port',
      startupProbe: '--startup-probe-port',
    });
    expect((await parse('sidecar')).args?.ports).toEqual({
      admin: 15000,
      outbound: 15001,
      inbound: 15003,
      metrics: 15010,
      dns: 15053,
      livenessProbe: 15901,
      readinessProbe: 15902,
      startupProbe: 15903,
    });
    const { args } = await parse(
      'sidecar',
      '--admin-port=16000',
      '--outbound-port=16001',
      '--inbound-port=16003',
      '--metrics-port=16010',
      '--dns-port=16053',
      '--liveness-probe-port=16901',
      '--readiness-probe-port=16902',
      '--startup-probe-port=16903',
      '--drain=250ms',
    );
    expect(args).toMatchObject({
      ports: { admin: 16000, outbound: 16001, inbound: 16003, metrics: 16010, dns: 16053, livenessProbe: 16901, readinessProbe: 16902, startupProbe: 16903 },
      drainMs: 250,
      watch: false,
    });
  });

  it('refuses a port that is not one, or a bad duration, as a usage error (exit 2), before anything runs', async () => {
    expect(await parse('sidecar', '--outbound-port', 'http')).toEqual({ code: 2 });
    expect(await parse('sidecar', '--dns-port', '70000')).toEqual({ code: 2 });
    // One flag per port: the three-at-once flag of earlier injectors is gone.
    expect(await parse('sidecar', '--probe-ports=17901,17902,17903')).toEqual({ code: 2 });
    expect(await parse('sidecar', '--drain', 'soon')).toEqual({ code: 2 });
    expect(await parse('sidecar', 'wait-ready', '--timeout', '2s', '--admin-port', '16000')).toEqual({
      code: 0,
      waited: { adminPort: 16000, timeoutMs: 2000 },
    });
  });

  it('fills in from the environment what the flags leave out: id, repo, token and CA files, state dir, app address', async () => {
    const { args } = await parse('sidecar');
    const log = createLogger('cli-test', 'silent');
    const env = {
      POD_NAMESPACE: 'shop',
      POD_NAME: 'orders-1',
      FLB_REPO_URL: 'https://flb-repo.flomesh.svc:6060',
      FLB_REPO_CA_FILE: '/etc/flb/repo-ca/ca.crt',
      FLB_STATE_DIR: '/var/lib/flb-test',
      POD_IP: '10.1.2.3',
    };
    const options = sidecarOptions(args!, env, log);
    expect(options).toMatchObject({
      id: 'pod.shop.orders-1',
      appHost: '10.1.2.3',
      config: {
        kind: 'repo',
        url: 'https://flb-repo.flomesh.svc:6060/repo/flb/sidecars/pod.shop.orders-1/',
        cacheDir: '/var/lib/flb-test/config',
        caFile: '/etc/flb/repo-ca/ca.crt',
      },
    });
    const flagged = (await parse('sidecar', '--id', 'vm.a', '--repo-ca-file', '/ca.pem', '--state-dir', '/s')).args!;
    expect(sidecarOptions(flagged, env, log).config).toMatchObject({ url: expect.stringContaining('/vm.a/'), caFile: '/ca.pem', cacheDir: '/s/config' });
    expect(() => sidecarOptions(args!, { POD_NAMESPACE: 'shop', POD_NAME: 'x' }, log)).toThrow('--repo URL (or FLB_REPO_URL), or --config-dir DIR');
  });

  it("takes its pod's interception mode from FLB_INTERCEPTION_MODE, and leaves it to mesh.json when unset or not a mode (logged)", async () => {
    const { args } = await parse('sidecar');
    const lines: string[] = [];
    const log = pino({ level: 'warn' }, { write: (line: string) => lines.push(line) });
    const env = { POD_NAMESPACE: 'shop', POD_NAME: 'orders-1', FLB_REPO_URL: 'http://repo:6060' };
    expect(sidecarOptions(args!, { ...env, FLB_INTERCEPTION_MODE: 'ebpf' }, log).interceptionMode).toBe('ebpf');
    expect(sidecarOptions(args!, env, log).interceptionMode).toBeUndefined();
    expect(lines).toEqual([]);
    expect(sidecarOptions(args!, { ...env, FLB_INTERCEPTION_MODE: 'bpf' }, log).interceptionMode).toBeUndefined();
    expect(lines.map((l) => JSON.parse(l) as Record<string, unknown>)).toEqual([
      expect.objectContaining({
        FLB_INTERCEPTION_MODE: 'bpf',
        msg: "FLB_INTERCEPTION_MODE is not iptables, cni or ebpf; mesh.json's interception.mode decides endpointFallback auto",
      }),
    ]);
  });

  const runFlb = (args: string[]) => runFlbRecordingFiles(args, { FLB_REPO_URL: '', FLB_SIDECAR_UNBUNDLED: '' });

  it('runs from the sidecar bundle alone when bin/flb.js starts it: parser, runner and sidecar in one module', () => {
    const bundle = join(root, 'dist', 'sidecar.bundle.mjs');
    if (!existsSync(bundle)) throw new Error(`${bundle} is missing: run npm run build`);
    // Through the parser into the runner, which refuses: no configuration source.
    const result = runFlb(['sidecar', '--id', 'vm.test']);
    expect(result.stderr).toContain('--repo URL');
    expect(result.status).toBe(2);
    expect(result.files).toEqual([join(root, 'bin', 'flb.js'), bundle].sort());
  });

  it("starts from V8's code cache under the NODE_OPTIONS the injector gives it; under other flags it compiles as before", () => {
    const bundle = join(root, 'dist', 'sidecar.bundle.mjs');
    if (!existsSync(bundle)) throw new Error(`${bundle} is missing: run npm run build`);
    const work = mkdtempSync(join(tmpdir(), 'flb-sidecar-cache-'));
    try {
      // A script file, not -e: the flags are the process's own (execArgv and NODE_OPTIONS), as in the pod.
      const script = join(work, 'load.mjs');
      writeFileSync(script, `const m = await import(${JSON.stringify(pathToFileURL(bundle).href)});\nconsole.log(m.codeCache, typeof m.runSidecarCommand);\n`);
      const load = (nodeOptions: string) =>
        spawnSync(process.execPath, [script], { env: { ...process.env, NODE_OPTIONS: nodeOptions }, encoding: 'utf8' }).stdout.trim();
      expect(load(defaultMesh().sidecar.nodeOptions)).toBe('accepted function');
      expect(load('')).toBe('accepted function');
      expect(load('--max-semi-space-size=7')).toBe('none function');
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });

  it('runs wait-ready, the postStart hook of every injected pod, from its own small module: no bundle, no CLI', async () => {
    const waiter = join(root, 'dist', 'sidecar', 'wait-ready.js');
    if (!existsSync(waiter)) throw new Error(`${waiter} is missing: run npm run build`);
    const lean = [
      join(root, 'bin', 'flb.js'),
      waiter,
      join(root, 'dist', 'common', 'duration.js'),
      join(root, 'dist', 'common', 'errors.js'),
      join(root, 'dist', 'common', 'sidecar-ready.js'),
    ].sort();
    const refused = runFlb(['sidecar', 'wait-ready', '--timeout', '1ms', '--admin-port', '1']);
    expect(refused.stderr).toContain('the sidecar was not ready within 0.001 s (http://127.0.0.1:1/ready: no answer');
    expect(refused.status).toBe(1);
    expect(refused.files).toEqual(lean);
    const server = createServer((_req, res) => res.end('ready\n'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const port = (server.address() as AddressInfo).port;
      // spawnSync would block the server's event loop: the child runs asynchronously here.
      const child = spawn(process.execPath, [join(root, 'bin', 'flb.js'), 'sidecar', 'wait-ready', '--timeout=5s', `--admin-port=${port}`], {
        stdio: 'ignore',
      });
      expect(await new Promise((resolve) => child.once('exit', resolve))).toBe(0);
    } finally {
      server.close();
    }
    // What it does not parse goes to the full CLI, which answers as it always did.
    const help = runFlb(['sidecar', 'wait-ready', '--help']);
    expect(help.status).toBe(0);
    expect(help.stdout).toContain('Waits until the sidecar on this host is ready');
    const bad = runFlb(['sidecar', 'wait-ready', '--admin-port', 'http']);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain('not a port number');
  });
});
