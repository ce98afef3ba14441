import { describe, expect, it } from '@jest/globals';
import { API_VERSION, BridgeConfigSchema } from '../../../common/contract/index.js';
import { issuesOf } from '../../../common/contract/validate.js';

const withSource = (source: Record<string, unknown>) =>
  BridgeConfigSchema.safeParse({
    apiVersion: API_VERSION,
    kind: 'BridgeConfig',
    mesh: { file: '/etc/flb/mesh.yaml' },
    sources: [{ kind: 'kubernetes' }, source],
    sinks: [{ kind: 'repo', url: 'http://127.0.0.1:6060' }],
  });

describe('a consul source in the BridgeConfig', () => {
  it('needs only its kind; the rest has defaults', () => {
    const parsed = withSource({ kind: 'consul' });
    expect(parsed.success).toBe(true);
    expect(parsed.data!.sources[1]).toEqual({
      kind: 'consul',
      name: 'consul',
      address: 'http://127.0.0.1:8500',
      domain: 'consul',
      staleAfterSeconds: 60,
      healthy: 'passing',
      services: { include: ['*'], exclude: ['consul'] },
      tags: { include: [], exclude: [] },
      meta: {},
      protocol: 'tcp',
      directDial: 'keep',
      removeAfterSeconds: 30,
      waitSeconds: 30,
      fetchConcurrency: 8,
      minQueryIntervalMs: 100,
      sweepIntervalSeconds: 30,
      timeoutSeconds: 10,
      maxResponseBytes: 256 * 1024 * 1024,
    });
  });

  it('takes a datacenter, a token file, TLS files and filters', () => {
    const parsed = withSource({
      kind: 'consul',
      name: 'consul-east',
      address: 'https://consul.east:8501',
      datacenter: 'east_1',
      tokenFile: '/var/run/secrets/consul/token',
      tls: { caFile: '/ca.pem', certFile: '/c.pem', keyFile: '/k.pem', serverName: 'server.east-1.consul' },
      healthy: 'passing-or-warning',
      tags: { include: ['prod'] },
      meta: { team: 'payments' },
    });
    expect(parsed.error).toBeUndefined();
    expect(parsed.data!.sources[1]).toMatchObject({ datacenter: 'east_1', healthy: 'passing-or-warning', tags: { include: ['prod'], exclude: [] } });
  });

  it.each([
    [{ kind: 'consul', address: 'ftp://consul:8500' }, 'sources[1].address: must be an http:// or https:// URL'],
    [{ kind: 'consul', address: 'http://user:pw@consul:8500' }, 'sources[1].address: must not hold credentials'],
    [{ kind: 'consul', address: 'http://consul:8500/v1' }, 'sources[1].address: must be the agent or server address only'],
    [{ kind: 'consul', datacenter: 'dc 1' }, 'sources[1].datacenter: must be a Consul datacenter name'],
    [{ kind: 'consul', tls: { keyFile: '/k.pem' } }, 'sources[1].tls: certFile and keyFile go together'],
    [{ kind: 'consul', healthy: 'warning' }, 'sources[1].healthy'],
    [{ kind: 'consul', waitSeconds: 60 }, 'sources[1].waitSeconds: must be well under staleAfterSeconds (60)'],
    [{ kind: 'consul', fetchConcurrency: 500 }, 'sources[1].fetchConcurrency'],
    [{ kind: 'consul', directDial: 'always' }, 'sources[1].directDial'],
  ])('refuses %j, naming the field', (source, message) => {
    const parsed = withSource(source);
    expect(parsed.success).toBe(false);
    const text = issuesOf(parsed.error!)
      .map((i) => `${i.field}: ${i.message}`)
      .join('\n');
    expect(text).toContain(message);
  });
});
