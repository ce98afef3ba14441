import { describe, expect, it } from '@jest/globals';
import { Command } from 'commander';
import { UsageError } from '../common/errors.js';
import { injectorCommands, parseConfigMapRef } from './cli.js';

/** `flb <args>` with the injector's commands; rejects with what the action throws. */
function flb(...args: string[]): Promise<unknown> {
  const program = new Command('flb').exitOverride();
  for (const command of injectorCommands()) program.addCommand(command.exitOverride());
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
