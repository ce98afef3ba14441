import { describe, expect, it } from '@jest/globals';
import { createCertificateAuthority, issueCertificate } from '../common/pki.js';
import {
  checkApiGroups,
  checkApiServer,
  checkBridgeLeader,
  checkBridgeSources,
  checkCaBundle,
  checkCni,
  checkInstallPermissions,
  checkMeshSettings,
  checkNativeSidecars,
  checkNotInstalled,
  checkRepo,
  checkSidecarsReporting,
  checkWebhookAnswers,
  checkWebhookConfiguration,
  meshFromText,
  renderChecks,
  summarize,
  REQUIRED_APIS,
  type BridgeStatusView,
  type WebhookEntry,
} from './checks.js';

const NS = 'flomesh';
const NOW = Date.parse('2031-05-01T12:00:00Z');
const server = 'https://10.0.0.1:6443';
const version = (major: string, minor: string, gitVersion = `v${major}.${minor.replace('+', '')}.3`) => ({ server, version: { gitVersion, major, minor } });

describe('the apiserver checks', () => {
  it('passes a supported release, and says native sidecars are there from 1.29', () => {
    expect(checkApiServer(version('1', '33'))).toMatchObject({ status: 'pass', detail: `Kubernetes v1.33.3 at ${server}` });
    expect(checkNativeSidecars(version('1', '29'))).toMatchObject({ status: 'pass' });
  });

  it("reads a managed cluster's minor with a plus, and falls back on gitVersion when major and minor are empty", () => {
    expect(checkNativeSidecars(version('1', '30+'))).toMatchObject({ status: 'pass' });
    expect(checkNativeSidecars({ server, version: { gitVersion: 'v1.31.0-gke.1', major: '', minor: '' } })).toMatchObject({ status: 'pass' });
  });

  it('warns before 1.29 that Jobs with a sidecar do not complete, and fails before 1.25 with what to do', () => {
    const older = checkNativeSidecars(version('1', '28'));
    expect(older.status).toBe('warn');
    expect(older.detail).toContain('postStart hook');
    expect(older.detail).toContain('Job');
    expect(older.hint).toContain('1.29');
    const tooOld = checkApiServer(version('1', '24'));
    expect(tooOld).toMatchObject({ status: 'fail', hint: expect.stringContaining('upgrade the cluster to Kubernetes 1.25') });
  });

  it('warns about a build that reports no release, rather than guessing', () => {
    const unstamped = { server, version: { gitVersion: 'v0.0.0-master+$Format:%H$', major: '', minor: '' } };
    expect(checkApiServer(unstamped)).toMatchObject({ status: 'warn', detail: expect.stringContaining('v0.0.0-master') });
    expect(checkNativeSidecars(unstamped)).toMatchObject({ status: 'warn', hint: expect.stringContaining('--native-sidecars true') });
  });

  it('fails an apiserver that does not answer, naming it and the kubeconfig', () => {
    const down = checkApiServer({ server, error: 'connect ECONNREFUSED 10.0.0.1:6443' });
    expect(down).toMatchObject({ status: 'fail', detail: `the apiserver at ${server} does not answer: connect ECONNREFUSED 10.0.0.1:6443` });
    expect(down.hint).toContain('--kubeconfig');
    expect(checkNativeSidecars({ server, error: 'x' }).status).toBe('skip');
  });
});

describe('pre-install checks', () => {
  it('names each API the mesh needs that is not served, with what uses it', () => {
    const served = Object.keys(REQUIRED_APIS).filter((api) => api !== 'coordination.k8s.io/v1');
    const result = checkApiGroups({ served: [...served, 'v1'] });
    expect(result).toMatchObject({ status: 'fail', detail: "not served: coordination.k8s.io/v1 (the bridge's leader election (Lease))" });
    expect(checkApiGroups({ served: Object.keys(REQUIRED_APIS) }).status).toBe('pass');
  });

  it('fails when the user may not make what the chart makes, listing each', () => {
    const result = checkInstallPermissions([
      { action: 'create namespaces', allowed: true },
      { action: 'create mutatingwebhookconfigurations (admissionregistration.k8s.io)', allowed: false },
      { action: 'create clusterroles (rbac.authorization.k8s.io)', allowed: false },
    ]);
    expect(result.status).toBe('fail');
    expect(result.detail).toBe(
      'you may not: create mutatingwebhookconfigurations (admissionregistration.k8s.io); create clusterroles (rbac.authorization.k8s.io)',
    );
    expect(result.hint).toContain('cluster administrator');
    expect(checkInstallPermissions([{ action: 'create namespaces', error: 'timeout' }]).status).toBe('warn');
  });

  it('warns when a webhook configuration of that name is there already', () => {
    expect(checkNotInstalled({ webhookConfigName: 'flb-sidecar-injector', exists: true })).toMatchObject({
      status: 'warn',
      hint: expect.stringContaining('helm upgrade'),
    });
    expect(checkNotInstalled({ webhookConfigName: 'flb-sidecar-injector', exists: false }).status).toBe('pass');
  });
});

describe('the mesh settings check', () => {
  it('reads the ConfigMap key through the contract, naming each bad field', () => {
    const read = meshFromText('apiVersion: flb.flomesh.io/v1alpha1\nkind: Mesh\nname: flb\nproxyUid: 0\nports: {admin: 15001}\n');
    expect(read).toEqual({ problems: ['ports.outbound: port 15001 is also used for admin', 'proxyUid: must not be root (0)'] });
    const result = checkMeshSettings({ where: 'ConfigMap flomesh/flb-mesh key mesh.yaml', found: true, problems: (read as { problems: string[] }).problems });
    expect(result.status).toBe('fail');
    expect(result.detail).toContain('proxyUid: must not be root (0)');
    expect(meshFromText('a: [1')).toEqual({ problems: [expect.stringMatching(/^not YAML: /)] });
  });

  it('fails a missing ConfigMap with what that means for pods', () => {
    const result = checkMeshSettings({ where: 'ConfigMap flomesh/flb-mesh key mesh.yaml', found: false });
    expect(result.detail).toBe('ConfigMap flomesh/flb-mesh key mesh.yaml does not exist: the injector injects nothing and the bridge publishes the defaults');
    expect(result.hint).toContain('flb validate');
  });
});

const serviceWebhooks = (caBundle: string[] = []): WebhookEntry[] =>
  ['namespace.sidecar-injector.flomesh.io', 'pod.sidecar-injector.flomesh.io'].map((name) => ({
    name,
    service: { namespace: NS, name: 'flb-injector', port: 443, path: '/mutate' },
    caBundle,
    failurePolicy: 'Fail',
  }));

describe('the webhook configuration check', () => {
  it('fails when the webhook Service is deleted, naming it and how to bring it back (the issue: red after the Service is deleted)', () => {
    const result = checkWebhookConfiguration(
      { name: 'flb-sidecar-injector', webhooks: serviceWebhooks(), service: { namespace: NS, name: 'flb-injector', exists: false, readyEndpoints: 0 } },
      NS,
    );
    expect(result).toMatchObject({
      status: 'fail',
      detail: "the webhook's Service flomesh/flb-injector does not exist: the apiserver cannot reach the injector",
    });
    expect(result.hint).toContain('helm upgrade');
  });

  it('fails a Service with no ready endpoint, pointing at the injector pods', () => {
    const result = checkWebhookConfiguration(
      { name: 'flb-sidecar-injector', webhooks: serviceWebhooks(), service: { namespace: NS, name: 'flb-injector', exists: true, readyEndpoints: 0 } },
      NS,
    );
    expect(result.status).toBe('fail');
    expect(result.hint).toContain('kubectl -n flomesh get pods -l app.kubernetes.io/name=flb-injector');
  });

  it('fails a missing configuration with how to install it, and passes one reached by URL', () => {
    expect(checkWebhookConfiguration({ name: 'flb-sidecar-injector' }, NS)).toMatchObject({
      status: 'fail',
      detail: 'MutatingWebhookConfiguration flb-sidecar-injector does not exist: no pod gets a sidecar',
      hint: expect.stringContaining('flb webhook install --service flomesh/flb-injector:443'),
    });
    const byUrl = checkWebhookConfiguration(
      { name: 'flb-sidecar-injector', webhooks: [{ name: 'a', url: 'https://127.0.0.1:9443/mutate', caBundle: [], failurePolicy: 'Ignore' }] },
      NS,
    );
    expect(byUrl).toMatchObject({ status: 'pass', detail: 'flb-sidecar-injector: 1 webhooks to https://127.0.0.1:9443/mutate, failurePolicy Ignore' });
  });
});

describe('the webhook answer check (a dry-run pod)', () => {
  const facts = { namespace: 'shop', why: 'labelled flomesh.io/inject=enabled', failurePolicies: ['Fail'] };

  it('passes a pod that came back with the sidecar and the status annotation', () => {
    const result = checkWebhookAnswers(
      {
        ...facts,
        outcome: {
          kind: 'created',
          containers: ['app'],
          initContainers: ['flb-init', 'flb-sidecar'],
          annotations: { 'flomesh.io/sidecar-status': '{"version":"0.1.0"}' },
          warnings: [],
        },
      },
      NS,
    );
    expect(result).toMatchObject({ status: 'pass' });
    expect(result.detail).toContain('flb-sidecar as a native sidecar');
  });

  it('quotes the apiserver when it could not call the webhook, and hints from its words', () => {
    const refused = (message: string) => checkWebhookAnswers({ ...facts, outcome: { kind: 'refused', status: 500, message } }, NS);
    const down = refused(
      'Internal error occurred: failed calling webhook "namespace.sidecar-injector.flomesh.io": failed to call webhook: Post "https://127.0.0.1:40213/mutate?timeout=10s": dial tcp 127.0.0.1:40213: connect: connection refused',
    );
    expect(down.status).toBe('fail');
    expect(down.detail).toContain('connection refused');
    expect(down.hint).toContain('the injector is not running or not reachable');
    const untrusted = refused('failed calling webhook "x": tls: failed to verify certificate: x509: certificate signed by unknown authority');
    expect(untrusted.hint).toContain('caBundle');
    const notReady = refused('failed calling webhook "x": failed to call webhook: flb-mesh injector is not ready: no mesh settings yet');
    expect(notReady.hint).toContain('mesh settings');
    const other = refused('pods "x" is forbidden: violates PodSecurity "restricted:latest"');
    expect(other.hint).toContain('before the webhook could inject');
  });

  it('fails a pod that came back without a sidecar, and says so about failurePolicy Ignore', () => {
    const outcome = { kind: 'created' as const, containers: ['app'], initContainers: [], annotations: {}, warnings: [] };
    const ignored = checkWebhookAnswers({ ...facts, failurePolicies: ['Ignore'], outcome }, NS);
    expect(ignored.status).toBe('fail');
    expect(ignored.detail).toContain('failurePolicy Ignore');
    expect(checkWebhookAnswers({ ...facts, outcome }, NS).hint).toContain('selectors');
  });
});

describe('the caBundle check', () => {
  const ca = createCertificateAuthority('flb-mesh injector CA', 365);
  const serving = issueCertificate(ca, { commonName: 'flb-injector.flomesh.svc', usage: 'server', dnsNames: ['flb-injector.flomesh.svc'], validDays: 30 });
  const otherCa = createCertificateAuthority('another CA', 365);
  const secret = { namespace: NS, name: 'flb-injector-tls', found: true, caPem: ca.certPem, certPem: serving.certPem };
  const now = Date.now();

  it("passes a bundle holding the CA that signed the injector's serving certificate", () => {
    const result = checkCaBundle({ webhooks: serviceWebhooks([ca.certPem]), secret, now }, NS);
    expect(result.status).toBe('pass');
    expect(result.detail).toMatch(/valid for \d+d more/);
  });

  it('fails a bundle left from another CA (a Secret made again), and an empty one', () => {
    const stale = checkCaBundle({ webhooks: serviceWebhooks([otherCa.certPem]), secret, now }, NS);
    expect(stale.status).toBe('fail');
    expect(stale.detail).toContain("does not hold the CA that signed the injector's serving certificate");
    expect(stale.hint).toContain('rollout restart deploy/flb-injector');
    expect(checkCaBundle({ webhooks: serviceWebhooks([]), secret, now }, NS)).toMatchObject({
      status: 'fail',
      detail: expect.stringContaining('no caBundle on'),
    });
  });

  it("points at cert-manager's Certificate, not an injector restart, when cert-manager keeps the caBundle", () => {
    const certManager = { namespace: NS, name: 'flb-injector' };
    const stale = checkCaBundle({ webhooks: serviceWebhooks([otherCa.certPem]), secret, certManager, now }, NS);
    expect(stale.status).toBe('fail');
    expect(stale.hint).toContain(`kubectl -n ${NS} describe certificate flb-injector`);
    expect(stale.hint).not.toContain('rollout restart');
    const untrusted = checkWebhookAnswers(
      {
        namespace: 'default',
        why: 'test',
        failurePolicies: ['Fail'],
        outcome: { kind: 'refused', status: 500, message: 'failed calling webhook "x": x509: certificate signed by unknown authority' },
      },
      NS,
      certManager,
    );
    expect(untrusted.hint).toContain("cert-manager's CA injector writes the caBundle from Certificate flomesh/flb-injector");
  });

  it('fails an expired serving certificate, and warns when the Secret cannot be read (cert-manager)', () => {
    const later = Date.now() + 40 * 86_400_000;
    expect(checkCaBundle({ webhooks: serviceWebhooks([ca.certPem]), secret, now: later }, NS)).toMatchObject({
      status: 'fail',
      detail: expect.stringContaining('serving certificate in Secret flomesh/flb-injector-tls expired'),
    });
    const hidden = checkCaBundle(
      { webhooks: serviceWebhooks([ca.certPem]), secret: { namespace: NS, name: 'flb-injector-tls', found: false, error: 'forbidden' }, now },
      NS,
    );
    expect(hidden.status).toBe('warn');
  });

  it("keeps passing while the old CA is still in the bundle next to the new one (the injector's rotation)", () => {
    expect(checkCaBundle({ webhooks: serviceWebhooks([ca.certPem, otherCa.certPem]), secret, now }, NS).status).toBe('pass');
  });
});

describe('the repo check', () => {
  const base = { url: 'https://flb-repo.flomesh.svc:6060', credentials: 'client certificate from Secret flomesh/flb-repo-client' };

  it('passes a repo that answers over TLS and has /flb/mesh', () => {
    const result = checkRepo({ ...base, answer: { status: 200, codebases: ['/flb/mesh', '/flb/sidecars/pod.shop.a', '/flb/sidecars/pod.shop.b'] } }, NS);
    expect(result).toMatchObject({ status: 'pass', detail: `${base.url} answers over TLS (${base.credentials}): /flb/mesh and 2 sidecar codebases` });
  });

  it('says the in-cluster name does not resolve here, and what to do', () => {
    const result = checkRepo({ ...base, error: { code: 'ENOTFOUND', message: 'getaddrinfo ENOTFOUND flb-repo.flomesh.svc' } }, NS);
    expect(result.status).toBe('fail');
    expect(result.hint).toContain('--repo-url');
    expect(result.hint).toContain('from a pod');
  });

  it('tells a certificate problem from a refused connection and from a refused client certificate', () => {
    expect(checkRepo({ ...base, error: { code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', message: 'unable to verify the first certificate' } }, NS).hint).toContain(
      'not signed by the CA given',
    );
    expect(checkRepo({ ...base, error: { code: 'ERR_TLS_CERT_ALTNAME_INVALID', message: 'altname' } }, NS).hint).toContain('extraDnsNames');
    expect(checkRepo({ ...base, error: { code: 'ECONNREFUSED', message: 'connect ECONNREFUSED' } }, NS).hint).toContain('flb-repo');
    expect(checkRepo({ ...base, answer: { status: 401, codebases: [] } }, NS).hint).toContain('--repo-cert-file');
  });

  it('fails a repo without /flb/mesh: the bridge has not published', () => {
    expect(checkRepo({ ...base, answer: { status: 200, codebases: [] } }, NS).detail).toContain('/flb/mesh is not published');
  });
});

describe('the bridge checks', () => {
  it('passes a Lease renewed within its duration and fails one that was not', () => {
    const lease = { namespace: NS, name: 'flb-bridge', found: true, holder: 'flb-bridge-7d-x', leaseDurationSeconds: 15, now: NOW };
    expect(checkBridgeLeader({ ...lease, renewTime: NOW - 3000 })).toMatchObject({
      status: 'pass',
      detail: 'flb-bridge-7d-x leads (Lease flomesh/flb-bridge renewed 3s ago)',
    });
    const lapsed = checkBridgeLeader({ ...lease, renewTime: NOW - 40_000 });
    expect(lapsed).toMatchObject({ status: 'fail', detail: expect.stringContaining('has not renewed it for 40s (lease 15s)') });
    expect(checkBridgeLeader({ namespace: NS, name: 'flb-bridge', found: false, now: NOW }).detail).toContain('no bridge replica has ever led');
  });

  const status = (sources: BridgeStatusView['sources'], more: Partial<BridgeStatusView> = {}): BridgeStatusView => ({
    identity: 'flb-bridge-0',
    leader: true,
    leaseHolder: 'flb-bridge-0',
    mesh: { name: 'flb', where: 'ConfigMap flomesh/flb-mesh' },
    sources,
    sinks: [{ name: 'repo', kind: 'repo', address: 'https://repo:6060', pending: 0, failures: 0 }],
    ...more,
  });

  it('passes when every source is synced', () => {
    const result = checkBridgeSources(
      { from: 'http://127.0.0.1:15020', status: status([{ name: 'kubernetes', kind: 'kubernetes', state: 'synced' }]), now: NOW },
      NS,
    );
    expect(result).toMatchObject({ status: 'pass', detail: 'flb-bridge-0: 1 sources synced: kubernetes (kubernetes); 1 sinks without errors' });
  });

  it('names a stale source with its address, last contact and error, and a refused mesh edit', () => {
    const result = checkBridgeSources(
      {
        from: 'http://127.0.0.1:15020',
        status: status(
          [
            { name: 'kubernetes', kind: 'kubernetes', state: 'synced' },
            {
              name: 'eureka',
              kind: 'eureka',
              address: 'http://eureka:8761/eureka/',
              state: 'stale',
              lastContactAt: NOW - 180_000,
              lastError: 'connect ECONNREFUSED',
            },
          ],
          { mesh: { problem: 'proxyUid: must not be root (0)' } },
        ),
        now: NOW,
      },
      NS,
    );
    expect(result.status).toBe('fail');
    expect(result.detail).toBe(
      'flb-bridge-0: a mesh settings edit was refused: proxyUid: must not be root (0); source eureka (eureka at http://eureka:8761/eureka/) is stale, last contact 3m ago: connect ECONNREFUSED',
    );
    expect(result.hint).toContain('flb bridge status --url http://127.0.0.1:15020');
  });

  it('fails when the status cannot be read, naming --bridge-url', () => {
    const result = checkBridgeSources({ from: 'pod flomesh/flb-bridge-0:15020', error: 'pods "flb-bridge-0" not found', now: NOW }, NS);
    expect(result).toMatchObject({ status: 'fail', hint: expect.stringContaining('--bridge-url') });
  });
});

describe('the CNI check', () => {
  const ds = { name: 'flb-cni-node', found: true, desired: 3, ready: 3 };

  it('is skipped in iptables mode and passes a DaemonSet ready everywhere in CNI mode', () => {
    expect(checkCni({ mode: 'iptables', namespace: NS, brokenPods: [] }).status).toBe('skip');
    expect(checkCni({ mode: 'cni', namespace: NS, daemonSet: ds, brokenPods: [] })).toMatchObject({
      status: 'pass',
      detail: 'DaemonSet flomesh/flb-cni-node ready on 3 of 3 nodes',
    });
  });

  it('fails a missing or partly ready DaemonSet, and pods the repair loop marked broken', () => {
    expect(checkCni({ mode: 'cni', namespace: NS, daemonSet: { ...ds, found: false }, brokenPods: [] }).detail).toContain('does not exist');
    expect(checkCni({ mode: 'cni', namespace: NS, daemonSet: { ...ds, ready: 2 }, brokenPods: [] }).detail).toContain('2 of 3 nodes');
    expect(checkCni({ mode: 'cni', namespace: NS, daemonSet: ds, brokenPods: ['shop/a'] }).detail).toContain('shop/a');
  });

  it('checks the node agent in eBPF mode too (CNI mode plus eBPF), not saying no CNI plugin is needed', () => {
    expect(checkCni({ mode: 'ebpf', namespace: NS, daemonSet: ds, brokenPods: [] })).toMatchObject({
      status: 'pass',
      detail: 'DaemonSet flomesh/flb-cni-node ready on 3 of 3 nodes (eBPF mode)',
    });
    const missing = checkCni({ mode: 'ebpf', namespace: NS, daemonSet: { ...ds, found: false }, brokenPods: [] });
    expect(missing).toMatchObject({
      status: 'fail',
      detail: expect.stringContaining('eBPF interception'),
      hint: expect.stringContaining('mesh.interception.mode=ebpf'),
    });
    expect(checkCni({ mode: 'ebpf', namespace: NS, daemonSet: { ...ds, ready: 1 }, brokenPods: [] })).toMatchObject({
      status: 'fail',
      detail: expect.stringContaining('1 of 3 nodes'),
    });
  });

  it('fails naming each node where eBPF cannot run, what its agent said is missing and its pods, with the other broken pods', () => {
    const result = checkCni({
      mode: 'ebpf',
      namespace: NS,
      daemonSet: ds,
      brokenPods: ['shop/a', 'shop/b', 'shop/other'],
      ebpfUnavailable: [{ node: 'n1', pods: ['shop/a', 'shop/b'], reason: 'missing bpftool, which loads the programs (apt-get install bpftool)' }],
    });
    expect(result.status).toBe('fail');
    expect(result.detail).toBe(
      'eBPF interception is not available on a node, whose eBPF pods fail their validation: node n1 (missing bpftool, which loads the programs (apt-get install bpftool)): shop/a, shop/b' +
        '; other pods found without interception (labelled flomesh.io/cni-repair=broken): shop/other',
    );
    expect(result.hint).toContain("'flb bpf check' on the node");
  });
});

describe('the sidecars check', () => {
  const codebases = new Map([
    ['pod.shop.a', { lastReportAt: NOW - 2000, rejected: 0 }],
    ['pod.shop.b', { lastReportAt: NOW - 45_000, rejected: 0 }],
    ['pod.shop.c', { rejected: 0 }],
  ]);
  const pods = [
    { id: 'pod.shop.a', sidecarStartedAt: NOW - 600_000 },
    { id: 'pod.shop.b', sidecarStartedAt: NOW - 600_000 },
    { id: 'pod.shop.c', sidecarStartedAt: NOW - 600_000 },
    { id: 'pod.shop.d', sidecarStartedAt: NOW - 600_000 },
    // just started: not judged yet
    { id: 'pod.shop.e', sidecarStartedAt: NOW - 5000 },
    // not running
    { id: 'pod.shop.f' },
  ];

  it('names sidecars without a codebase and those silent past --stale-after', () => {
    const result = checkSidecarsReporting({ pods, codebases, now: NOW, staleAfterMs: 30_000 }, NS);
    expect(result.status).toBe('fail');
    expect(result.detail).toBe(
      'no codebase in the repo for pod.shop.d (the bridge makes one when it sees the pod); not reporting for 30s: pod.shop.b (last report 45s ago), pod.shop.c (no report kept: none in the last minute)',
    );
  });

  it('passes when every running sidecar reported, and warns about refused files', () => {
    const fresh = new Map([['pod.shop.a', { lastReportAt: NOW - 2000, rejected: 0 }]]);
    expect(checkSidecarsReporting({ pods: pods.slice(0, 1), codebases: fresh, now: NOW, staleAfterMs: 30_000 }, NS)).toMatchObject({
      status: 'pass',
      detail: '1 running sidecars, every one reported within 30s',
    });
    fresh.set('pod.shop.a', { lastReportAt: NOW - 2000, rejected: 2 });
    expect(checkSidecarsReporting({ pods: pods.slice(0, 1), codebases: fresh, now: NOW, staleAfterMs: 30_000 }, NS)).toMatchObject({
      status: 'warn',
      hint: expect.stringContaining('flb proxy-status'),
    });
  });
});

describe('the report', () => {
  it('prints one line per check, the hint under a failure, and the count', () => {
    const text = renderChecks(
      summarize([
        { id: 'a', title: 'Kubernetes API', status: 'pass', detail: 'Kubernetes v1.33.1' },
        { id: 'b', title: 'repo', status: 'fail', detail: 'nothing answers', hint: 'start it' },
        { id: 'c', title: 'CNI plugin', status: 'skip', detail: 'iptables mode', hint: 'never shown' },
      ]),
    );
    expect(text).toBe(
      '[ok]   Kubernetes API: Kubernetes v1.33.1\n[FAIL] repo: nothing answers\n       hint: start it\n[skip] CNI plugin: iptables mode\n\n1 of 3 checks failed\n',
    );
  });
});
