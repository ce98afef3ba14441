import { describe, expect, it } from '@jest/globals';
import { Command } from 'commander';
import { UsageError } from '../common/errors.js';
import { injectorCommands, parseConfigMapRef } from './cli.js';

/** `flb <args>` with the injector's commands; rejects with what the action throws. */
function flb(...args: string[]): Promise<unknown> {
  const program = new Command('flb');
  for (const command of injectorCommands()) program.addCommand(command);
  // Every level: commander's own errors (a conflict found while parsing `serve`) would exit the process.
  const throwInstead = (command: Command): void => {
    command.exitOverride().configureOutput({ writeErr: () => undefined });
    for (const sub of command.commands) throwInstead(sub);
  };
  throwInstead(program);
  return program.parseAsync(['node', 'flb', ...args]);
}

describe('flb webhook serve: where the mesh settings come from', () => {
  it('takes a ConfigMap as NAMESPACE/NAME, with a key when given', () => {
    expect(parseConfigMapRef('flomesh/flb-mesh', '--mesh-configmap')).toEqual({ namespace: 'flomesh', name: 'flb-mesh' });
    expect(parseConfigMapRef('flomesh/flb-mesh.v2:settings.yaml', '--mesh-configmap')).toEqual({
      namespace: 'flomesh',
      name: 'flb-mesh.v2',
      key: 'settings.yaml',
    });
  });

  it('refuses a ConfigMap reference that is not NAMESPACE/NAME[:KEY], before starting anything', async () => {
    for (const bad of ['flb-mesh', 'Flomesh/flb-mesh', 'flomesh/', 'flomesh/flb-mesh:', 'flomesh/flb-mesh:a/b']) {
      await expect(flb('webhook', 'serve', '--mesh-configmap', bad)).rejects.toEqual(
        new UsageError(`--mesh-configmap "${bad}" is not NAMESPACE/NAME[:KEY] of a ConfigMap (e.g. flomesh/flb-mesh, or flomesh/flb-mesh:mesh.yaml)`),
      );
    }
  });

  it('refuses a file and a ConfigMap together', async () => {
    await expect(flb('webhook', 'serve', '--mesh-config', 'mesh.yaml', '--mesh-configmap', 'flomesh/flb-mesh')).rejects.toBeInstanceOf(UsageError);
  });
});

describe('flb webhook serve --tls-dir: a certificate from a mounted Secret', () => {
  it('refuses the options of the certificates the injector makes itself, naming both', async () => {
    for (const other of [
      ['--secret', 'mine'],
      ['--config-name', 'theirs'],
      ['--cert-validity', '24h'],
      ['--dns-name', 'a.example'],
    ]) {
      await expect(flb('webhook', 'serve', '--tls-dir', '/etc/flb/tls', ...other)).rejects.toMatchObject({
        code: 'commander.conflictingOption',
        message: expect.stringContaining(`option '--tls-dir <dir>' cannot be used with option '${other[0]}`),
      });
    }
  });

  it('names a folder without the certificate before reaching for the cluster', async () => {
    await expect(flb('webhook', 'serve', '--tls-dir', '/nonexistent/flb-tls', '--kubeconfig', '/nonexistent/kubeconfig')).rejects.toMatchObject({
      name: 'ActionableError',
      message: 'the webhook certificate file /nonexistent/flb-tls/tls.crt does not exist',
    });
  });
});
