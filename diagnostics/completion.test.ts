import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Argument, Command, Option } from 'commander';
import { bashCompletion, completionTree, zshCompletion } from './completion.js';

// A tree shaped like flb's: nested subcommands, flags with values, choices and files.
function program(): Command {
  const root = new Command('flb');
  root.command('inject').option('-f, --filename <path>', 'manifest file').option('-R, --recursive', 'subfolders').option('--explain', 'why');
  const webhook = root.command('webhook').summary('the injector').option('--context <name>', 'kubeconfig context');
  webhook.command('serve').option('--listen <host:port>', 'HTTPS address').option('--kubeconfig <file>', 'kubeconfig: where the API is');
  webhook.command('install').addOption(new Option('--failure-policy <policy>', 'what the apiserver does').choices(['Fail', 'Ignore']));
  root
    .command('check')
    .addOption(new Option('-o, --output <format>', 'table or json').choices(['table', 'json']))
    .option('--pre-install', 'before');
  return root;
}

const shellMissing = (shell: string) => spawnSync(shell, ['-c', 'exit 0']).error !== undefined;

describe('the completion tree', () => {
  it('has every subcommand and flag, what each flag takes, and help', () => {
    const tree = completionTree(program());
    expect(tree.commands.map((c) => c.name)).toEqual(['inject', 'webhook', 'check']);
    const serve = tree.commands[1]!.commands[0]!;
    expect(serve.options).toEqual([
      { flags: ['--listen'], description: 'HTTPS address', value: { kind: 'any' } },
      { flags: ['--kubeconfig'], description: 'kubeconfig: where the API is', value: { kind: 'file' } },
      { flags: ['-h', '--help'], description: 'display help for command' },
    ]);
    expect(tree.commands[2]!.options[0]).toEqual({
      flags: ['-o', '--output'],
      description: 'table or json',
      value: { kind: 'choice', choices: ['table', 'json'] },
    });
  });
});

describe('completion scripts, run in the shells', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'flb-completion-'));
    writeFileSync(join(dir, 'bash.sh'), bashCompletion(completionTree(program())));
    writeFileSync(join(dir, 'zsh.sh'), zshCompletion(completionTree(program())));
    writeFileSync(join(dir, 'deploy.yaml'), '');
    writeFileSync(join(dir, 'data.json'), '');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** What bash offers at the end of `line` (Tab after the last word; a trailing space starts a new one). */
  const bash = (line: string, file = 'bash.sh'): string[] => {
    const words = line.split(' ');
    const script = `source ${join(dir, file)}; COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _flb; printf '%s\\n' "\${COMPREPLY[@]}"`;
    const result = spawnSync('bash', ['--norc', '-c', script], { cwd: dir, encoding: 'utf8' });
    expect(result.stderr).toBe('');
    return result.stdout.split('\n').filter(Boolean).sort();
  };

  it('bash: subcommands, then nested ones, then flags of the command reached', () => {
    expect(bash('flb ')).toEqual(['check', 'inject', 'webhook']);
    expect(bash('flb we')).toEqual(['webhook']);
    expect(bash('flb webhook ')).toEqual(['install', 'serve']);
    expect(bash('flb webhook serve --')).toEqual(['--help', '--kubeconfig', '--listen']);
    expect(bash('flb check -')).toEqual(['--help', '--output', '--pre-install', '-h', '-o']);
  });

  it("bash: a flag's choices and files, after a space or an = (which bash splits into a word of its own)", () => {
    expect(bash('flb check -o ')).toEqual(['json', 'table']);
    expect(bash('flb check --output = j')).toEqual(['json']);
    expect(bash('flb check --output =')).toEqual(['json', 'table']);
    expect(bash('flb webhook install --failure-policy I')).toEqual(['Ignore']);
    expect(bash('flb inject -f de')).toEqual(['deploy.yaml']);
    // A flag's value is not taken for a subcommand: `serve` here is the value of --context.
    expect(bash('flb webhook --context serve ')).toEqual(['install', 'serve']);
    // A free value gets nothing offered.
    expect(bash('flb webhook serve --listen ')).toEqual([]);
  });

  /** What zsh offers: the completion functions stubbed to print what they were given. */
  const zsh = (line: string, file = 'zsh.sh'): string[] => {
    if (shellMissing('zsh')) throw new Error('zsh is not installed: apt-get install zsh (scripts/apt-packages.txt)');
    const words = line.split(' ');
    const stubs = [
      'compdef() { : }',
      'compset() { : }',
      '_describe() { local arr=$4; print -rl -- ${${(P)arr}%%:*} }',
      'compadd() { [[ $1 == -- ]] && shift; print -rl -- "$@" }',
      '_files() { print -r -- FILES }',
    ].join('\n');
    const script = `${stubs}\nsource ${join(dir, file)}\nwords=(${words.map((w) => `'${w}'`).join(' ')})\nCURRENT=${words.length}\n_flb\n`;
    const result = spawnSync('zsh', ['-f', '-c', script], { cwd: dir, encoding: 'utf8' });
    expect(result.stderr).toBe('');
    return result.stdout.split('\n').filter(Boolean).sort();
  };

  it('zsh: subcommands with their descriptions, nested ones, flags, choices and files', () => {
    expect(zsh('flb ')).toEqual(['check', 'inject', 'webhook']);
    expect(zsh('flb webhook ')).toEqual(['install', 'serve']);
    expect(zsh('flb webhook serve --')).toEqual(['--help', '--kubeconfig', '--listen', '-h']);
    expect(zsh('flb check -o ')).toEqual(['json', 'table']);
    expect(zsh('flb check --output=')).toEqual(['json', 'table']);
    expect(zsh('flb inject -f ')).toEqual(['FILES']);
    expect(zsh('flb webhook --context serve ')).toEqual(['install', 'serve']);
  });

  it("zsh: descriptions keep their colons escaped (zsh's _describe splits on the first unescaped one)", () => {
    expect(zshCompletion(completionTree(program()))).toContain('--kubeconfig:kubeconfig\\: where the API is');
  });

  it('both: the choices of a positional argument', () => {
    const withArgument = program();
    withArgument.command('completion').addArgument(new Argument('<shell>').choices(['bash', 'zsh']));
    writeFileSync(join(dir, 'arg.bash'), bashCompletion(completionTree(withArgument)));
    writeFileSync(join(dir, 'arg.zsh'), zshCompletion(completionTree(withArgument)));
    expect(bash('flb completion z', 'arg.bash')).toEqual(['zsh']);
    expect(zsh('flb completion ', 'arg.zsh')).toEqual(['bash', 'zsh']);
  });

  it("flb's own scripts load in both shells and complete its subcommands", () => {
    const flb = fileURLToPath(new URL('../bin/flb.js', import.meta.url));
    for (const shell of ['bash', 'zsh'] as const) {
      const generated = spawnSync(process.execPath, [flb, 'completion', shell], { encoding: 'utf8', env: { ...process.env, FLB_LOG_LEVEL: 'silent' } });
      expect(generated.status).toBe(0);
      writeFileSync(join(dir, `flb.${shell}`), generated.stdout);
    }
    for (const offered of [bash('flb ', 'flb.bash'), zsh('flb ', 'flb.zsh')])
      expect(offered).toEqual(expect.arrayContaining(['check', 'completion', 'proxy-config', 'proxy-status', 'validate', 'webhook']));
    expect(bash('flb check -o ', 'flb.bash')).toEqual(['json', 'table']);
    expect(bash('flb completion ', 'flb.bash')).toEqual(['bash', 'zsh']);
    expect(zsh('flb completion ', 'flb.zsh')).toEqual(['bash', 'zsh']);
    expect(bash('flb validate -f de', 'flb.bash')).toEqual(['deploy.yaml']);
    expect(zsh('flb validate -f ', 'flb.zsh')).toEqual(['FILES']);
  });
});
