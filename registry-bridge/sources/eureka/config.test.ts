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

describe('an eureka source in the BridgeConfig', () => {
  it('needs only its servers; the rest has defaults', () => {
    const parsed = withSource({ kind: 'eureka', servers: ['http://eureka-1:8761/eureka/', 'http://eureka-2:8761/eureka/'] });
    expect(parsed.success).toBe(true);
    expect(parsed.data!.sources[1]).toEqual({
      kind: 'eureka',
      name: 'eureka',
      servers: ['http://eureka-1:8761/eureka/', 'http://eureka-2:8761/eureka/'],
      staleAfterSeconds: 60,
      intervalSeconds: 5,
      timeoutSeconds: 10,
      statuses: ['UP'],
      servicePort: 80,
      protocol: 'http',
      preferSecurePort: false,
      directDial: 'keep',
      maxResponseBytes: 64 * 1024 * 1024,
    });
  });

  it.each([
    [{ kind: 'eureka', servers: [] }, 'sources[1].servers: name at least one Eureka server'],
    [{ kind: 'eureka', servers: ['ftp://eureka/'] }, 'sources[1].servers[0]: must be an http:// or https:// URL'],
    [{ kind: 'eureka', servers: ['http://admin:secret@eureka:8761/eureka/'] }, 'sources[1].servers[0]: must not hold credentials'],
    [{ kind: 'eureka', servers: ['https://eureka/'], tls: { certFile: '/c.pem' } }, 'sources[1].tls: certFile and keyFile go together'],
    [{ kind: 'eureka', servers: ['https://eureka/'], statuses: ['UP', 'GONE'] }, 'sources[1].statuses[1]'],
    [{ kind: 'eureka', name: 'Eureka_Prod', servers: ['https://eureka/'] }, 'sources[1].name'],
    [{ kind: 'eureka', servers: ['https://eureka/'], directDial: true }, 'sources[1].directDial'],
  ])('refuses %j, naming the field', (source, message) => {
    const parsed = withSource(source);
    expect(parsed.success).toBe(false);
    const text = issuesOf(parsed.error!)
      .map((i) => `${i.field}: ${i.message}`)
      .join('\n');
    expect(text).toContain(message);
  });
});
