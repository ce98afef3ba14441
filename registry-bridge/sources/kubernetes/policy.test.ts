import { describe, expect, it } from '@jest/globals';
import { DEFAULT_POLICY, policyFromAnnotations } from './policy.js';

describe('a Service policy from its annotations', () => {
  it('is the default without annotations', () => {
    expect(policyFromAnnotations({})).toEqual({ policy: DEFAULT_POLICY, problems: [] });
  });

  it('reads the short annotations', () => {
    const { policy, problems } = policyFromAnnotations({
      'flomesh.io/load-balancer': 'least-request',
      'flomesh.io/health-check': 'http:/healthz',
      'flomesh.io/retries': '3',
      'flomesh.io/connect-timeout': '250ms',
      'flomesh.io/locality': 'none',
      'flomesh.io/outlier-detection': 'on',
    });
    expect(problems).toEqual([]);
    expect(policy.loadBalancer.algorithm).toBe('least-request');
    expect(policy.healthCheck).toMatchObject({ protocol: 'http', path: '/healthz' });
    expect(policy.retries?.attempts).toBe(3);
    expect(policy.connect.timeoutMs).toBe(250);
    expect(policy.locality.prefer).toBe('none');
    expect(policy.outlierDetection).toBeDefined();
  });

  it('takes a whole policy in YAML and lets the short annotations win over it', () => {
    const { policy } = policyFromAnnotations({
      'flomesh.io/policy': 'loadBalancer:\n  algorithm: random\nconnect:\n  timeoutMs: 700\n  retries: 1\n',
      'flomesh.io/load-balancer': 'weighted',
    });
    expect(policy.loadBalancer.algorithm).toBe('weighted');
    expect(policy.connect).toEqual({ timeoutMs: 700, retries: 1 });
  });

  it('hashes on a header with ring-hash', () => {
    const { policy } = policyFromAnnotations({ 'flomesh.io/hash-on': 'header:x-user' });
    expect(policy.loadBalancer).toMatchObject({ algorithm: 'ring-hash', hash: { on: 'header', name: 'x-user' } });
  });

  it('gives the default policy and names every problem when any annotation is bad', () => {
    const { policy, problems } = policyFromAnnotations({
      'flomesh.io/load-balancer': 'fastest',
      'flomesh.io/connect-timeout': 'soon',
      'flomesh.io/policy': '[1, 2',
    });
    expect(policy).toEqual(DEFAULT_POLICY);
    expect(problems).toEqual([
      expect.stringMatching(/^annotation flomesh.io\/policy: not YAML or JSON/),
      expect.stringMatching(/^annotation flomesh.io\/connect-timeout: expected a duration/),
      expect.stringMatching(/^policy loadBalancer.algorithm: /),
    ]);
  });
});
