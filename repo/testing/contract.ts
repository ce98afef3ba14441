import { expect, it } from '@jest/globals';

/**
 * The repo REST API behaviour that flb's repo and a real Pipy repo share (repo/PIPY-API.md), as
 * jest cases against a base URL. Each run uses its own codebase names, so it can run against a
 * repo that already holds data.
 */
export function repoContract(baseUrl: () => string, prefix: string): void {
  const url = (path: string) => `${baseUrl()}${path}`;
  const call = async (method: string, path: string, body?: string) => {
    const res = await fetch(url(path), { method, ...(body !== undefined ? { body } : {}) });
    return { status: res.status, text: await res.text(), etag: res.headers.get('etag') };
  };
  const cb = `/${prefix}mesh`;
  const derived = `/${prefix}sidecar`;

  it('creates a codebase that is listed but not served before it is published', async () => {
    expect((await call('POST', `/api/v1/repo${cb}`, '{}')).status).toBe(201);
    expect((await call('GET', '/api/v1/repo')).text.split('\n')).toContain(cb);
    expect((await call('GET', `/repo${cb}/`)).status).toBe(404);
    expect((await call('POST', `/api/v1/repo${cb}`, '{}')).status).toBe(400);
  });

  it('keeps drafts out of the served tree until a publish with a version', async () => {
    expect((await call('POST', `/api/v1/repo-files${cb}/mesh.json`, '{"v":1}')).status).toBe(201);
    expect((await call('PATCH', `/api/v1/repo${cb}`, '{"main":"/mesh.json","version":"1"}')).status).toBe(201);
    const manifest = await call('GET', `/repo${cb}/`);
    expect(manifest).toMatchObject({ status: 200, etag: '1' });
    expect(manifest.text.split('\n')[0]).toBe('/mesh.json');
    expect((await call('POST', `/api/v1/repo-files${cb}/mesh.json`, '{"v":2}')).status).toBe(201);
    expect((await call('GET', `/repo${cb}/mesh.json`)).text).toBe('{"v":1}');
    expect((await call('GET', `/api/v1/repo-files${cb}/mesh.json`)).text).toBe('{"v":2}');
    expect((await call('PATCH', `/api/v1/repo${cb}`, '{"version":"2"}')).status).toBe(201);
    expect(await call('HEAD', `/repo${cb}/`)).toMatchObject({ status: 200, etag: '2' });
    expect((await call('GET', `/repo${cb}/mesh.json`)).text).toBe('{"v":2}');
  });

  it('describes a codebase as Pipy does', async () => {
    const info = JSON.parse((await call('GET', `/api/v1/repo${cb}`)).text) as Record<string, unknown>;
    expect(info).toMatchObject({ version: '2', path: cb, main: '/mesh.json', editFiles: [], erasedFiles: [], baseFiles: [], derived: [] });
    expect(info.files).toContain('/mesh.json');
    expect(info).toHaveProperty('instances');
  });

  it('serves a derived codebase with its base files, and a base publish changes what it serves', async () => {
    expect((await call('POST', `/api/v1/repo${derived}`, JSON.stringify({ base: cb }))).status).toBe(201);
    expect((await call('POST', `/api/v1/repo-files${derived}/sidecar.json`, '{"id":"a"}')).status).toBe(201);
    expect((await call('PATCH', `/api/v1/repo${derived}`, '{"version":"1"}')).status).toBe(201);
    const before = await call('GET', `/repo${derived}/`);
    expect(before.text.split('\n').sort()).toEqual(['/mesh.json', '/sidecar.json']);
    expect((await call('GET', `/repo${derived}/mesh.json`)).text).toBe('{"v":2}');
    await call('POST', `/api/v1/repo-files${cb}/mesh.json`, '{"v":3}');
    await call('PATCH', `/api/v1/repo${cb}`, '{"version":"3"}');
    const after = await call('HEAD', `/repo${derived}/`);
    expect(after.etag).not.toBe(before.etag);
    expect((await call('GET', `/repo${derived}/mesh.json`)).text).toBe('{"v":3}');
    const info = JSON.parse((await call('GET', `/api/v1/repo${derived}`)).text) as Record<string, unknown>;
    expect(info).toMatchObject({ base: cb, files: ['/sidecar.json'], baseFiles: ['/mesh.json'] });
  });

  it('lists per-file versions in _etags', async () => {
    const etags = await call('GET', `/repo${derived}/_etags`);
    expect(etags.status).toBe(200);
    expect(
      etags.text
        .split('\n')
        .filter(Boolean)
        .map((l) => l.split('#')[0]),
    ).toEqual(['/mesh.json', '/sidecar.json']);
  });

  it('erases a file with the next publish', async () => {
    expect((await call('DELETE', `/api/v1/repo-files${derived}/sidecar.json`)).status).toBe(204);
    expect(JSON.parse((await call('GET', `/api/v1/repo${derived}`)).text)).toMatchObject({ erasedFiles: ['/sidecar.json'] });
    await call('PATCH', `/api/v1/repo${derived}`, '{"version":"2"}');
    expect((await call('GET', `/repo${derived}/sidecar.json`)).status).toBe(404);
  });

  it('records the status reports of workers as instances', async () => {
    const status = { timestamp: Date.now(), since: Date.now(), uuid: `${prefix}uuid-1`, name: 'worker-1', ip: '', version: '2', modules: {}, logs: [] };
    expect([201, 206]).toContain((await call('POST', `/repo${derived}/`, JSON.stringify(status))).status);
    const info = JSON.parse((await call('GET', `/api/v1/repo${derived}`)).text) as { instances: Record<string, { status: { uuid: string } }> };
    expect(Object.values(info.instances).map((i) => i.status.uuid)).toContain(`${prefix}uuid-1`);
  });
}
