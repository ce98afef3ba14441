import { describe, expect, it } from '@jest/globals';
import type { V1EndpointSlice, V1Service } from '@kubernetes/client-node';
import { execa } from 'execa';
import { serviceRules } from './service-proxy.js';

const service = (name: string, clusterIP: string, ports: { name?: string; port: number; protocol?: string }[]): V1Service => ({
  metadata: { name, namespace: 'shop' },
  spec: { clusterIP, clusterIPs: [clusterIP], ports },
});
const slice = (
  service: string,
  ports: { name?: string; port: number }[],
  endpoints: { ip: string; ready?: boolean }[],
  addressType = 'IPv4',
): V1EndpointSlice => ({
  metadata: { name: `${service}-x`, namespace: 'shop', labels: { 'kubernetes.io/service-name': service } },
  addressType,
  ports,
  endpoints: endpoints.map(({ ip, ready }) => ({ addresses: [ip], conditions: ready === undefined ? {} : { ready } })),
});

describe('the Service rules (kube-proxy stand-in)', () => {
  const services = [
    service('echo', '10.96.0.20', [{ name: 'http', port: 80 }]),
    service('repo', '10.96.0.30', [{ name: 'https', port: 6060 }]),
    service('headless', 'None', [{ name: 'http', port: 80 }]),
    service('empty', '10.96.0.40', [{ port: 53, protocol: 'UDP' }]),
  ];
  const slices = [
    slice('echo', [{ name: 'http', port: 8080 }], [{ ip: '10.7.0.4' }, { ip: '10.7.0.2' }, { ip: '10.7.0.3' }, { ip: '10.7.0.9', ready: false }]),
    slice('repo', [{ name: 'https', port: 6060 }], [{ ip: '10.7.0.5', ready: true }]),
    slice('repo', [{ name: 'https', port: 6060 }], [{ ip: 'fd00::5' }], 'IPv6'),
    slice('headless', [{ name: 'http', port: 8080 }], [{ ip: '10.7.0.6' }]),
  ];

  const chains = { translate: 'FLBSVC-1', reject: 'FLBSVCR-1' };

  it('sends each ClusterIP:port to its ready endpoints at their target port, evenly at random', () => {
    expect(serviceRules(chains, services, slices).translate).toEqual([
      '-A FLBSVC-1 -d 10.96.0.20/32 -p tcp -m tcp --dport 80 -m statistic --mode random --probability 0.33333 -j DNAT --to-destination 10.7.0.2:8080',
      '-A FLBSVC-1 -d 10.96.0.20/32 -p tcp -m tcp --dport 80 -m statistic --mode random --probability 0.50000 -j DNAT --to-destination 10.7.0.3:8080',
      '-A FLBSVC-1 -d 10.96.0.20/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.7.0.4:8080',
      '-A FLBSVC-1 -d 10.96.0.30/32 -p tcp -m tcp --dport 6060 -j DNAT --to-destination 10.7.0.5:6060',
    ]);
  });

  it('refuses a ClusterIP:port with no ready endpoint at once, as kube-proxy does, instead of letting the caller time out', () => {
    const allUnready = [...slices, slice('later', [{ name: 'http', port: 8080 }], [{ ip: '10.7.0.8', ready: false }])];
    expect(serviceRules(chains, [...services, service('later', '10.96.0.50', [{ name: 'http', port: 80 }])], allUnready).reject).toEqual([
      '-A FLBSVCR-1 -d 10.96.0.40/32 -p udp -m udp --dport 53 -j REJECT --reject-with icmp-port-unreachable',
      '-A FLBSVCR-1 -d 10.96.0.50/32 -p tcp -m tcp --dport 80 -j REJECT --reject-with tcp-reset',
    ]);
  });

  it('writes rules iptables-restore parses (--test: nothing is applied)', async () => {
    const rules = serviceRules(chains, services, slices);
    for (const [table, chain, lines] of [
      ['nat', 'FLBSVC-1', rules.translate],
      ['filter', 'FLBSVCR-1', rules.reject],
    ] as const) {
      const restore = await execa('iptables-restore', ['--test'], { input: `*${table}\n:${chain} - [0:0]\n${lines.join('\n')}\nCOMMIT\n`, reject: false });
      expect({ table, exitCode: restore.exitCode, stderr: restore.stderr }).toEqual({ table, exitCode: 0, stderr: '' });
    }
  });
});
