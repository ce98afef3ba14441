import { describe, expect, it } from '@jest/globals';
import { API_VERSION } from './contract/index.js';
import { LastGoodMesh, describeMeshConfigMap } from './kube-mesh-settings.js';

const where = describeMeshConfigMap({ namespace: 'flomesh', name: 'flb-mesh', key: 'mesh.yaml' });
const meshText = (extra = '') => `apiVersion: ${API_VERSION}\nkind: Mesh\nname: shop\n${extra}`;

describe('the last good mesh settings', () => {
  it('has none until good settings are read, whatever was refused before', () => {
    const settings = new LastGoodMesh(where);
    expect(settings.refuse('ConfigMap flomesh/flb-mesh does not exist')).toEqual({
      outcome: 'refused',
      problem: 'ConfigMap flomesh/flb-mesh does not exist',
    });
    expect(settings.offer(meshText('proxyUid: 0\n'))).toMatchObject({ outcome: 'refused' });
    expect(settings.mesh).toBeUndefined();
    const first = settings.offer(meshText());
    expect(first).toMatchObject({ outcome: 'changed', mesh: { name: 'shop', proxyUid: 1500 } });
    expect(settings.mesh?.name).toBe('shop');
    expect(settings.problem).toBeUndefined();
  });

  it('keeps them through a bad edit, naming the field and where it is', () => {
    const settings = new LastGoodMesh(where);
    settings.offer(meshText('sidecar:\n  logLevel: debug\n'));
    const verdict = settings.offer(meshText('sidecar:\n  logLevel: debug\nproxyUid: 0\n'));
    expect(verdict).toEqual({
      outcome: 'refused',
      problem: 'invalid ConfigMap flomesh/flb-mesh key mesh.yaml: proxyUid: must not be root (0)',
    });
    expect(settings.problem).toBe(verdict.outcome === 'refused' ? verdict.problem : '');
    expect(settings.mesh?.sidecar.logLevel).toBe('debug');
  });

  it('refuses text that is not YAML, quoting the parser, and keeps the last good', () => {
    const settings = new LastGoodMesh(where);
    settings.offer(meshText());
    const verdict = settings.offer('name: [shop\n');
    expect(verdict.outcome).toBe('refused');
    expect(settings.problem).toMatch(/^ConfigMap flomesh\/flb-mesh key mesh.yaml is neither YAML nor JSON: /);
    expect(settings.mesh?.name).toBe('shop');
  });

  it('refuses the same bad text once: a relist or an edit of another key raises no second Event', () => {
    const settings = new LastGoodMesh(where);
    settings.offer(meshText());
    expect(settings.offer(meshText('proxyUid: 0\n')).outcome).toBe('refused');
    expect(settings.offer(meshText('proxyUid: 0\n')).outcome).toBe('unchanged');
    expect(settings.refuse('ConfigMap flomesh/flb-mesh has no key mesh.yaml').outcome).toBe('refused');
    expect(settings.refuse('ConfigMap flomesh/flb-mesh has no key mesh.yaml').outcome).toBe('unchanged');
    expect(settings.refuse('ConfigMap flomesh/flb-mesh was deleted').outcome).toBe('refused');
    expect(settings.mesh?.name).toBe('shop');
  });

  it('clears the problem when the last good settings come back, without announcing them as new', () => {
    const settings = new LastGoodMesh(where);
    settings.offer(meshText());
    settings.offer(meshText('proxyUid: 0\n'));
    // Written differently, the same settings: nothing for the caller to apply.
    expect(settings.offer(`{"apiVersion": "${API_VERSION}", "kind": "Mesh", "name": "shop"}`)).toEqual({ outcome: 'unchanged' });
    expect(settings.problem).toBeUndefined();
    settings.refuse('ConfigMap flomesh/flb-mesh was deleted');
    expect(settings.offer(meshText())).toEqual({ outcome: 'unchanged' });
    expect(settings.problem).toBeUndefined();
  });

  it('takes each new good edit', () => {
    const settings = new LastGoodMesh(where);
    settings.offer(meshText());
    expect(settings.offer(meshText('sidecar:\n  logLevel: warn\n'))).toMatchObject({ outcome: 'changed', mesh: { sidecar: { logLevel: 'warn' } } });
    expect(settings.offer(meshText('sidecar:\n  logLevel: trace\n'))).toMatchObject({ outcome: 'changed', mesh: { sidecar: { logLevel: 'trace' } } });
    expect(settings.mesh?.sidecar.logLevel).toBe('trace');
  });
});
