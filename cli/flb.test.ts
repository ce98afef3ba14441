import { describe, expect, it } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { SUBCOMMANDS } from './program.js';

// The installed executable, as `npx flb` runs it (the build is made by `npm ci` / scripts/test.sh).
const flb = fileURLToPath(new URL('../bin/flb.js', import.meta.url));
const run = (...args: string[]) => {
  const result = spawnSync(process.execPath, [flb, ...args], { encoding: 'utf8', env: { ...process.env, FLB_LOG_LEVEL: 'silent' } });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
};

describe('flb CLI', () => {
  it('lists every subcommand in --help, on stdout, exit 0', () => {
    const { code, stdout } = run('--help');
    expect(code).toBe(0);
    const listed = [...stdout.matchAll(/^ {2}([a-z]+)\b/gm)].map((m) => m[1]);
    expect(listed).toEqual([...SUBCOMMANDS, 'help']);
    expect(SUBCOMMANDS).toEqual(['inject', 'webhook', 'repo', 'bridge', 'sidecar', 'iptables', 'cni', 'bpf', 'bgp', 'vm', 'demo']);
  });

  it.each(SUBCOMMANDS)('flb %s --help works', (sub) => {
    const { code, stdout, stderr } = run(sub, '--help');
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(stdout).toMatch(new RegExp(`^Usage: flb ${sub}`));
  });

  it('says which issue builds a subcommand that is not built yet, exit 2', () => {
    const { code, stdout, stderr } = run('bgp');
    expect(code).toBe(2);
    expect(stdout).toBe('');
    expect(stderr).toContain("'flb bgp' is not built yet (the BGP announcer");
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
