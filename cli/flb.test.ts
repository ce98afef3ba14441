import { describe, expect, it } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SUBCOMMANDS } from './program.js';

// The installed executable, as `npx flb` runs it (the build is made by `npm ci` / scripts/test.sh).
const flb = fileURLToPath(new URL('../bin/flb.js', import.meta.url));
const runWith = (env: Record<string, string>, ...args: string[]) => {
  const result = spawnSync(process.execPath, [flb, ...args], { encoding: 'utf8', env: { ...process.env, FLB_LOG_LEVEL: 'silent', ...env } });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
};
const run = (...args: string[]) => runWith({}, ...args);

const NOT_BUILT = ['vm'];

describe('flb CLI', () => {
  it('lists every subcommand in --help, on stdout, exit 0', () => {
    const { code, stdout } = run('--help');
    expect(code).toBe(0);
    const listed = [...stdout.matchAll(/^ {2}([a-z][-a-z]*)\b/gm)].map((m) => m[1]);
    expect(listed).toEqual([...SUBCOMMANDS, 'help']);
    expect(SUBCOMMANDS).toEqual([
      'inject',
      'webhook',
      'repo',
      'bridge',
      'sidecar',
      'iptables',
      'cni',
      'bpf',
      'bgp',
      'vm',
      'check',
      'proxy-status',
      'proxy-config',
      'validate',
      'demo',
      'completion',
    ]);
  });

  it.each(SUBCOMMANDS)('flb %s --help works', (sub) => {
    const { code, stdout, stderr } = run(sub, '--help');
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(stdout).toMatch(new RegExp(`^Usage: flb ${sub}`));
  });

  it('says which issue builds a subcommand that is not built yet, exit 2', () => {
    const { code, stdout, stderr } = run('vm');
    expect(code).toBe(2);
    expect(stdout).toBe('');
    expect(stderr).toContain("'flb vm' is not built yet (the VM installer");
  });

  it('flb bgp without --config says what it needs, exit 2', () => {
    const { code, stderr } = run('bgp');
    expect(code).toBe(2);
    expect(stderr).toContain("flb bgp needs --config FILE (or 'flb bgp status')");
  });

  it.each(NOT_BUILT)('flb %s --help says it is not built yet, and so does the list in flb --help', (sub) => {
    const help = run(sub, '--help');
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(new RegExp(`^Usage: flb ${sub} \\[options\\]\\n\\nNot built yet: `));
    expect(help.stdout.replace(/\s+/g, ' ')).toContain('Running it only says so and exits 2.');
    const listed = run('--help')
      .stdout.split('\n')
      .find((line) => line.startsWith(`  ${sub} `));
    expect(listed).toMatch(new RegExp(`^ {2}${sub} +\\(not built yet\\) [a-z]`));
  });

  it('marks as not built exactly the subcommands that are not', () => {
    for (const sub of SUBCOMMANDS) {
      const built = !NOT_BUILT.includes(sub);
      expect([sub, run(sub, '--help').stdout.includes('Not built yet')]).toEqual([sub, !built]);
      if (!built) expect(run(sub).stderr).toContain(`'flb ${sub}' is not built yet`);
    }
  });

  it('refuses a log level or format that is not one, naming those that are (was: verbose silently became info)', () => {
    const level = runWith({ FLB_LOG_LEVEL: 'verbose' }, 'iptables', 'print');
    expect(level.code).toBe(2);
    expect(level.stdout).toBe('');
    expect(level.stderr).toBe('flb: FLB_LOG_LEVEL=verbose is not a log level; use one of fatal, error, warn, info, debug, trace, silent\n');
    const format = runWith({ FLB_LOG_FORMAT: 'logfmt' }, 'iptables', 'print');
    expect(format.code).toBe(2);
    expect(format.stderr).toBe('flb: FLB_LOG_FORMAT=logfmt is not a log format; use one of json, pretty\n');
  });

  it('logs readable lines on a terminal and JSON lines into a pipe', () => {
    const dir = mkdtempSync(join(tmpdir(), 'flb-cli-log-'));
    try {
      mkdirSync(join(dir, 'net.d'));
      mkdirSync(join(dir, 'bin'));
      writeFileSync(join(dir, 'net.d', '10-bridge.conf'), JSON.stringify({ cniVersion: '1.0.0', name: 'pods', type: 'bridge' }));
      writeFileSync(join(dir, 'flb-cni'), '#!/bin/sh\n');
      const install = [flb, 'cni', 'install', '--conf-dir', join(dir, 'net.d'), '--bin-dir', join(dir, 'bin'), '--plugin', join(dir, 'flb-cni')];
      const env = { ...process.env, FLB_LOG_LEVEL: 'info', FLB_LOG_FORMAT: '', TERM: 'dumb', NO_COLOR: '1' };
      // util-linux's script(1) gives the command a terminal, as a person's shell does.
      const quoted = [process.execPath, ...install].map((word) => `'${word}'`).join(' ');
      const onTerminal = spawnSync('script', ['-qec', `${quoted} 2>&1 1>/dev/null`, '/dev/null'], { encoding: 'utf8', env });
      expect(onTerminal.status).toBe(0);
      expect(onTerminal.stdout).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: cni-install: flb-cni chained into the CNI configuration\r\n {4}file: /);
      rmSync(join(dir, 'net.d', '10-bridge.conflist'));
      writeFileSync(join(dir, 'net.d', '10-bridge.conf'), JSON.stringify({ cniVersion: '1.0.0', name: 'pods', type: 'bridge' }));
      const piped = spawnSync(process.execPath, install, { encoding: 'utf8', env });
      expect(piped.status).toBe(0);
      expect(JSON.parse(piped.stderr)).toMatchObject({ level: 30, component: 'cni-install', msg: 'flb-cni chained into the CNI configuration' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('exits 2 on usage errors, with the problem on stderr', () => {
    const unknown = run('frobnicate');
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain("unknown command 'frobnicate'");
    const nowhere = run('sidecar', '--id', 'vm.test');
    expect(nowhere.code).toBe(2);
    expect(nowhere.stderr).toContain('--repo URL');
    const missing = run('repo', '--listen');
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("option '--listen <host:port>' argument missing");
  });

  it('prints its version', () => {
    const { code, stdout } = run('--version');
    expect(code).toBe(0);
    expect(stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
  });
});
