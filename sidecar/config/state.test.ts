import { describe, expect, it } from '@jest/globals';
import { buildState, sourceFiles, type SidecarState } from './state.js';
import { codebase, json, meshDoc, serviceDoc, sidecarDoc } from './testing/fixtures.js';

const a = serviceDoc('a', { vip: '240.240.0.1' });
const b = serviceDoc('b', { vip: '240.240.0.2' });
const c = serviceDoc('c', { vip: '240.240.0.3' });

function first(files: Map<string, Buffer>): SidecarState {
  const { state, rejected } = buildState(files, undefined, '1');
  expect(rejected).toEqual([]);
  return state!;
}

describe('buildState', () => {
  it('builds a state from a valid codebase, services in id order, everything new', () => {
    const { state, change, rejected } = buildState(codebase([c, a, b]), undefined, '7', { sidecarId: 'pod.shop.w' });
    expect(rejected).toEqual([]);
    expect(state!.version).toBe('7');
    expect(state!.mesh.name).toBe('flb');
    expect(state!.mesh.ports.outbound).toBe(15001);
    expect(state!.sidecar.id).toBe('pod.shop.w');
    expect([...state!.services.keys()]).toEqual(['a.static', 'b.static', 'c.static']);
    expect(state!.services.get('a.static')!.endpoints[0]).toMatchObject({ address: '10.0.0.1', port: 8080, weight: 1, healthy: true });
    expect(change).toEqual({ mesh: true, sidecar: true, services: { added: ['a.static', 'b.static', 'c.static'], changed: [], removed: [] } });
    expect([...sourceFiles(state!)!.keys()].sort()).toEqual([
      'mesh.json',
      'services/a.static.json',
      'services/b.static.json',
      'services/c.static.json',
      'sidecar.json',
    ]);
  });

  it('summarises a change: added, changed, removed; unchanged files are not parsed again', () => {
    const before = first(codebase([a, b]));
    const files = codebase([serviceDoc('a', { vip: '240.240.0.1', endpoints: 2 }), c]);
    const { state, change, rejected } = buildState(files, before, '2');
    expect(rejected).toEqual([]);
    expect(change).toEqual({ mesh: false, sidecar: false, services: { added: ['c.static'], changed: ['a.static'], removed: ['b.static'] } });
    expect(state!.services.get('a.static')!.endpoints).toHaveLength(2);

    const again = buildState(files, state, '3');
    expect(again.change).toEqual({ mesh: false, sidecar: false, services: { added: [], changed: [], removed: [] } });
    // Same bytes: the very same parsed object, so consumers can compare by identity.
    expect(again.state!.services.get('c.static')).toBe(state!.services.get('c.static'));
    expect(again.state!.mesh).toBe(state!.mesh);
    expect(again.state!.version).toBe('3');
  });

  it('refuses a bad service with a message naming the file and the field, and keeps its previous version', () => {
    const before = first(codebase([a, b]));
    const files = codebase([serviceDoc('a', { vip: '10.1.2.3', endpoints: 3 }), b, serviceDoc('d', { vip: '240.240.0.4', extra: { ports: [] } })]);
    files.set('/services/e.static.json', Buffer.from('{"apiVersion": "flb.flomesh.io/v1al'));
    files.set('/services/f.static.json', json(serviceDoc('g', { vip: '240.240.0.6' })));
    const { state, change, rejected } = buildState(files, before, '2');
    expect(rejected).toEqual([
      {
        path: 'services/a.static.json',
        error: 'invalid services/a.static.json: vips[0].address: mesh-allocated VIP 10.1.2.3 is outside the mesh VIP ranges (240.240.0.0/16)',
      },
      { path: 'services/d.static.json', error: 'invalid services/d.static.json: ports: a service needs at least one port' },
      { path: 'services/e.static.json', error: expect.stringMatching(/^invalid services\/e\.static\.json: \(document\): not valid JSON: /) },
      {
        path: 'services/f.static.json',
        error: 'invalid services/f.static.json: id: is "g.static", but the file is services/f.static.json (a service\'s file is services/<its id>.json)',
      },
    ]);
    expect(state!.services.get('a.static')).toBe(before.services.get('a.static'));
    expect([...state!.services.keys()]).toEqual(['a.static', 'b.static']);
    expect(change.services).toEqual({ added: [], changed: [], removed: [] });
    // The cache gets the bytes in force, not the refused ones.
    expect(sourceFiles(state!)!.get('services/a.static.json')!.equals(sourceFiles(before)!.get('services/a.static.json')!)).toBe(true);
  });

  it('keeps the previous mesh.json and sidecar.json when new ones are bad; at first start there is no state', () => {
    const before = first(codebase([a]));
    const badMesh = codebase([a], meshDoc({ name: 'Not_A_Label', proxyUid: 0 }), sidecarDoc('pod.shop.w', { locality: { zone: 'z1' } }));
    const result = buildState(badMesh, before, '2');
    expect(result.rejected).toEqual([
      {
        path: 'mesh.json',
        error: 'invalid mesh.json: name: must be lowercase letters, digits and "-", starting and ending with a letter or digit; proxyUid: must not be root (0)',
      },
    ]);
    expect(result.state!.mesh).toBe(before.mesh);
    expect(result.change).toMatchObject({ mesh: false, sidecar: true });
    expect(result.state!.sidecar.locality.zone).toBe('z1');

    const badSidecar = codebase([a], meshDoc(), sidecarDoc('pod.shop.w', { identity: { kind: 'pod', namespace: 'shop' } }));
    const kept = buildState(badSidecar, result.state, '3');
    expect(kept.rejected).toEqual([
      { path: 'sidecar.json', error: 'invalid sidecar.json: identity.name: required, expected string; identity.serviceAccount: required, expected string' },
    ]);
    expect(kept.state!.sidecar).toBe(result.state!.sidecar);

    expect(buildState(badMesh, undefined, '1')).toMatchObject({ state: undefined, rejected: [{ path: 'mesh.json' }] });
    expect(buildState(badSidecar, undefined, '1')).toMatchObject({ state: undefined, rejected: [{ path: 'sidecar.json' }] });
    const noMesh = codebase([a]);
    noMesh.delete('/mesh.json');
    expect(buildState(noMesh, undefined, '1')).toMatchObject({
      state: undefined,
      rejected: [{ path: 'mesh.json', error: 'invalid mesh.json: (document): missing from the codebase' }],
    });
  });

  it("refuses a sidecar.json that is another sidecar's or another mesh's", () => {
    const other = buildState(codebase([a], meshDoc(), sidecarDoc('pod.shop.other')), undefined, '1', { sidecarId: 'pod.shop.w' });
    expect(other).toMatchObject({
      state: undefined,
      rejected: [
        {
          path: 'sidecar.json',
          error: 'invalid sidecar.json: id: is "pod.shop.other", but this sidecar is "pod.shop.w" (its --id, FLB_SIDECAR_ID, or POD_NAMESPACE and POD_NAME)',
        },
      ],
    });
    const mesh = buildState(codebase([a], meshDoc(), sidecarDoc('pod.shop.w', { mesh: 'other' })), undefined, '1');
    expect(mesh.rejected).toEqual([{ path: 'sidecar.json', error: 'invalid sidecar.json: mesh: is "other", but mesh.json names "flb"' }]);
  });

  it('refuses a service whose VIP:port another service serves, keeping the older one', () => {
    const before = first(codebase([a]));
    const clash = serviceDoc('b', { vip: '240.240.0.1' });
    const { state, rejected, change } = buildState(codebase([a, clash, serviceDoc('c', { vip: '240.240.0.1', port: 81 })]), before, '2');
    expect(rejected).toEqual([
      {
        path: 'services/b.static.json',
        error:
          'invalid services/b.static.json: vips[0].address: 240.240.0.1:80 is already served by a.static (services/a.static.json); the proxy maps a VIP and port to one service',
      },
    ]);
    expect([...state!.services.keys()]).toEqual(['a.static', 'c.static']);
    expect(change.services.added).toEqual(['c.static']);

    // Older wins even when the newer sorts first.
    const zBefore = first(codebase([serviceDoc('z', { vip: '240.240.0.9' })]));
    const late = buildState(codebase([serviceDoc('z', { vip: '240.240.0.9' }), serviceDoc('m', { vip: '240.240.0.9' })]), zBefore, '2');
    expect(late.rejected).toMatchObject([{ path: 'services/m.static.json' }]);
    expect([...late.state!.services.keys()]).toEqual(['z.static']);

    // Both new: the id that sorts first, the same on every sidecar.
    const fresh = buildState(codebase([clash, a]), undefined, '1');
    expect(fresh.rejected).toMatchObject([{ path: 'services/b.static.json' }]);

    // A known service moving onto another's VIP keeps its previous version.
    const two = first(codebase([a, b]));
    const moved = buildState(codebase([a, serviceDoc('b', { vip: '240.240.0.1', endpoints: 2 })]), two, '2');
    expect(moved.rejected).toMatchObject([{ path: 'services/b.static.json', error: expect.stringContaining('already served by a.static') }]);
    expect(moved.state!.services.get('b.static')).toBe(two.services.get('b.static'));
    expect(moved.change.services).toEqual({ added: [], changed: [], removed: [] });
  });

  it('keeps only the services the sidecar may reach, and follows changes to that list', () => {
    const list = (services: string[]) => sidecarDoc('pod.shop.w', { services });
    const bad = serviceDoc('bad', { vip: '1.2.3.4' });
    const { state, rejected } = buildState(codebase([a, b, c, bad], meshDoc(), list(['a.static', 'c.static', 'missing.static'])), undefined, '1');
    // A file this sidecar does not use is not even read, so its problems are not this sidecar's.
    expect(rejected).toEqual([]);
    expect([...state!.services.keys()]).toEqual(['a.static', 'c.static']);
    const next = buildState(codebase([a, b, c, bad], meshDoc(), list(['b.static', 'c.static'])), state, '2');
    expect(next.change).toEqual({ mesh: false, sidecar: true, services: { added: ['b.static'], changed: [], removed: ['a.static'] } });
    const all = buildState(codebase([a, b, c], meshDoc(), list(['*'])), next.state, '3');
    expect([...all.state!.services.keys()]).toEqual(['a.static', 'b.static', 'c.static']);
  });

  it('checks services again when the mesh VIP ranges change', () => {
    const before = first(codebase([a, serviceDoc('k', { vip: '240.241.0.1' })], meshDoc({ vipRanges: ['240.240.0.0/16', '240.241.0.0/16'] })));
    const { state, rejected, change } = buildState(codebase([a, serviceDoc('k', { vip: '240.241.0.1' })]), before, '2');
    expect(change.mesh).toBe(true);
    expect(rejected).toMatchObject([{ path: 'services/k.static.json', error: expect.stringContaining('outside the mesh VIP ranges (240.240.0.0/16)') }]);
    // Refused but still the version in force: taking it away would break its connections.
    expect(state!.services.get('k.static')).toBe(before.services.get('k.static'));
  });
});
