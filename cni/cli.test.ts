import { afterEach, describe, expect, it } from '@jest/globals';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { repoRoot, runFlbRecordingFiles } from '../common/testing/loaded-files.js';

// The installed executable, as a DaemonSet runs it (built by `npm ci` / scripts/test.sh).
const flb = fileURLToPath(new URL('../bin/flb.js', import.meta.url));
const dirs: string[] = [];
afterEach(() => dirs.splice(0).forEach((dir) => rmSync(dir, { recursive: true, force: true })));

function work(): { dir: string; env: NodeJS.ProcessEnv; agentArgs: string[] } {
  const dir = mkdtempSync(join(tmpdir(), 'flb-cni-cli-'));
  dirs.push(dir);
  mkdirSync(join(dir, 'home'));
  // No kubeconfig anywhere: an empty home, no KUBECONFIG, no ServiceAccount (tests do not run in a pod).
  const env: NodeJS.ProcessEnv = { ...process.env, HOME: join(dir, 'home'), FLB_LOG_FORMAT: 'json', FLB_LOG_LEVEL: 'info' };
  delete env.KUBECONFIG;
  return { dir, env, agentArgs: ['cni', 'agent', '--socket', join(dir, 'agent.sock'), '--state-dir', join(dir, 'state')] };
}

function kubeconfig(dir: string, server: string): string {
  const file = join(dir, 'kubeconfig');
  writeFileSync(
    file,
    `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: '${server}', insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`,
  );
  return file;
}

describe('flb cni agent', () => {
  it('without a kubeconfig, says where it looked and what to do, and does not start (was: it served, failing every ADD with "HTTP protocol is not allowed")', () => {
    const { dir, env, agentArgs } = work();
    const result = spawnSync(process.execPath, [flb, ...agentArgs], { env, encoding: 'utf8', timeout: 20_000 });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(`flb: no Kubernetes API configured: no --kubeconfig, KUBECONFIG is not set, ${dir}/home/.kube/config does not exist`);
    expect(result.stderr).toContain('hint: pass --kubeconfig FILE or set KUBECONFIG=FILE');
  });

  it('with the API away, logs the failing repair passes once, not every interval with a stack', async () => {
    const { dir, env, agentArgs } = work();
    const child = spawn(
      process.execPath,
      [flb, ...agentArgs, '--kubeconfig', kubeconfig(dir, 'https://127.0.0.1:1'), '--node-name', 'node-1', '--repair-interval', '20ms'],
      { env },
    );
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    // Started (a loaded machine takes seconds to load the CLI), then ~50 more repair intervals.
    for (const deadline = Date.now() + 15_000; !stderr.includes('cni-repair') && Date.now() < deadline;)
      await new Promise((resolve) => setTimeout(resolve, 50));
    await new Promise((resolve) => setTimeout(resolve, 1000));
    child.kill('SIGTERM');
    await new Promise((resolve) => child.once('exit', resolve));
    const lines = stderr
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { msg: string; component: string; error?: string });
    const failing = lines.filter((l) => l.component === 'cni-repair');
    expect(failing).toHaveLength(1);
    expect(failing[0]).toMatchObject({ msg: 'repair pass failed; trying again every interval', condition: 'repair-failing' });
    expect(failing[0]!.error).toContain('ECONNREFUSED');
    expect(stderr).not.toContain('"stack"');
  }, 20_000);

  it('refuses to take the socket of an agent that is serving it, and says how to run a second one', async () => {
    const { dir, env, agentArgs } = work();
    const config = ['--kubeconfig', kubeconfig(dir, 'https://127.0.0.1:1'), '--repair', 'off'];
    const first = spawn(process.execPath, [flb, ...agentArgs, ...config], { env });
    try {
      await new Promise<void>((resolve) => first.stderr.on('data', (d: Buffer) => d.toString().includes('CNI agent listening') && resolve()));
      const second = spawnSync(process.execPath, [flb, ...agentArgs, ...config], { env, encoding: 'utf8', timeout: 20_000 });
      expect(second.status).toBe(1);
      expect(second.stderr).toBe(
        `flb: the CNI agent cannot listen on ${dir}/agent.sock: another process is listening there\n` +
          `hint: stop that process (see who: ss -lxp | grep ${dir}/agent.sock), or move the CNI agent with --socket PATH (the plugin finds it through FLB_CNI_AGENT_SOCKET)\n`,
      );
      expect(first.exitCode).toBeNull();
    } finally {
      first.kill('SIGTERM');
      await new Promise((resolve) => first.once('exit', resolve));
    }
  }, 20_000);
});

describe('flb iptables as the init container runs it', () => {
  it('runs from its bundle alone (no CLI, no other part), with the full parser: print, help and a bad flag', () => {
    const bundle = join(repoRoot, 'dist', 'iptables.bundle.mjs');
    if (!existsSync(bundle)) throw new Error(`${bundle} is missing: run npm run build`);
    const printed = runFlbRecordingFiles(['iptables', 'print', '--settings', JSON.stringify({ version: 1, mode: 'iptables', ipv6: 'disabled' })]);
    expect(printed.stderr).toBe('');
    expect(printed.status).toBe(0);
    expect(printed.stdout).toMatch(/^# IPv4: iptables-restore --noflush\n\*nat\n/);
    expect(printed.stdout).toContain('-j REDIRECT --to-ports 15001');
    expect(printed.files).toEqual([join(repoRoot, 'bin', 'flb.js'), bundle].sort());
    const help = runFlbRecordingFiles(['iptables', 'apply', '--help']);
    expect(help.status).toBe(0);
    expect(help.stdout).toContain('Usage: flb iptables apply [options]');
    const bad = runFlbRecordingFiles(['iptables', 'apply', '--backend', 'pf']);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain("option '--backend <backend>' argument 'pf' is invalid");
  });

  it("starts from V8's code cache (the init container runs without NODE_OPTIONS); under other flags it compiles as before", () => {
    const bundle = join(repoRoot, 'dist', 'iptables.bundle.mjs');
    const work = mkdtempSync(join(tmpdir(), 'flb-iptables-cache-'));
    try {
      // A script file, not -e: the flags are the process's own (execArgv and NODE_OPTIONS), as in the pod.
      const script = join(work, 'load.mjs');
      writeFileSync(script, `const m = await import(${JSON.stringify(pathToFileURL(bundle).href)});\nconsole.log(m.codeCache, typeof m.runIptablesCommand);\n`);
      const load = (nodeOptions: string) =>
        spawnSync(process.execPath, [script], { env: { ...process.env, NODE_OPTIONS: nodeOptions }, encoding: 'utf8' }).stdout.trim();
      expect(load('')).toBe('accepted function');
      expect(load('--max-semi-space-size=7')).toBe('none function');
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
});
