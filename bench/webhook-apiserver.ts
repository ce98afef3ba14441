// Benchmark (issue #3, part two): 1,000 pods created through a real kube-apiserver with
// `flb webhook serve` installed, against 1,000 pods with no webhook, same run. Reports the pods
// per second the apiserver sustained both ways and the webhook's own latency histogram (the
// apiserver's admission histogram starts at 5 ms, too coarse for this).
// Usage: npm run bench:webhook-apiserver [-- --pods 1000]
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { CoreV1Api, type V1Pod } from '@kubernetes/client-node';
import { startControlPlane, freePorts } from '../devenv/controlplane.js';
import { report } from './lib/report.js';
import { stop } from './lib/processes.js';

const pods = Number(process.argv[process.argv.indexOf('--pods') + 1] || 1000) || 1000;
const concurrency = 16;
const flb = fileURLToPath(new URL('../../bin/flb.js', import.meta.url));
const progress = (m: string) => process.stderr.write(`bench: ${m}\n`);

const plane = await startControlPlane({ onProgress: (m) => progress(m) });
const core = plane.kubeConfig.makeApiClient(CoreV1Api);
const [port, metricsPort] = await freePorts(2);
const injector = spawn(
  'setpriv',
  [
    '--pdeathsig',
    'KILL',
    '--',
    process.execPath,
    flb,
    'webhook',
    'serve',
    `--listen=127.0.0.1:${port}`,
    `--metrics-listen=127.0.0.1:${metricsPort}`,
    `--kubeconfig=${plane.kubeconfigPath}`,
    '--dns-name=localhost',
    '--ip=127.0.0.1',
  ],
  { stdio: ['ignore', 'inherit', 'inherit'], env: { ...process.env, FLB_LOG_LEVEL: 'warn' } },
);

async function createPods(namespace: string): Promise<{ seconds: number; injected: number }> {
  await core.createNamespace({ body: { metadata: { name: namespace, labels: { 'flomesh.io/inject': 'enabled' } } } });
  for (let i = 0; i < 100; i++) {
    try {
      await core.readNamespacedServiceAccount({ name: 'default', namespace });
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  const body = (i: number): V1Pod => ({
    metadata: { name: `pod-${i}`, labels: { app: 'bench' } },
    spec: {
      containers: [
        { name: 'app', image: 'example/app:1', ports: [{ name: 'http', containerPort: 8080 }], readinessProbe: { httpGet: { path: '/ready', port: 'http' } } },
      ],
    },
  });
  let next = 0;
  let injected = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < pods) {
        const created = await core.createNamespacedPod({ namespace, body: body(next++) });
        if (created.metadata?.annotations?.['flomesh.io/sidecar-status']) injected++;
      }
    }),
  );
  return { seconds: (performance.now() - started) / 1000, injected };
}

/** Quantile from a Prometheus histogram: the upper bound of the bucket it falls in. */
function histogramQuantile(text: string, name: string, q: number): number {
  const buckets = [...text.matchAll(new RegExp(`^${name}_bucket\\{le="([^"]+)"\\} (\\d+)`, 'gm'))].map((m) => ({ le: Number(m[1]), count: Number(m[2]) }));
  const total = buckets[buckets.length - 1]?.count ?? 0;
  return buckets.find((b) => b.count >= q * total)?.le ?? Number.NaN;
}

try {
  await core.createNamespace({ body: { metadata: { name: 'flomesh' } } });
  for (let i = 0; i < 200; i++) {
    if (
      await fetch(`http://127.0.0.1:${metricsPort}/metrics`).then(
        (r) => r.ok,
        () => false,
      )
    )
      break;
    await new Promise((r) => setTimeout(r, 100));
  }
  progress('installing the webhook configuration with `flb webhook install`');
  await new Promise<void>((resolve, reject) => {
    const install = spawn(process.execPath, [flb, 'webhook', 'install', `--url=https://127.0.0.1:${port}/mutate`, `--kubeconfig=${plane.kubeconfigPath}`], {
      stdio: 'inherit',
    });
    install.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`flb webhook install exited ${code}`))));
  });

  progress(`creating ${pods} pods without a webhook (namespace not selected)`);
  await core.createNamespace({ body: { metadata: { name: 'plain' } } });
  await new Promise((r) => setTimeout(r, 1000));
  const plainBody = async () => {
    // Same pods, in a namespace the webhook does not select, so the apiserver never calls it.
    const ns = 'plain';
    let next = 0;
    const started = performance.now();
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < pods) {
          const i = next++;
          await core.createNamespacedPod({
            namespace: ns,
            body: {
              metadata: { name: `pod-${i}` },
              spec: {
                containers: [
                  {
                    name: 'app',
                    image: 'example/app:1',
                    ports: [{ name: 'http', containerPort: 8080 }],
                    readinessProbe: { httpGet: { path: '/ready', port: 'http' } },
                  },
                ],
              },
            },
          });
        }
      }),
    );
    return (performance.now() - started) / 1000;
  };
  const plainSeconds = await plainBody();
  progress(`creating ${pods} pods through the webhook`);
  const meshed = await createPods('meshed');
  const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const name = 'flb_injector_review_duration_seconds';
  const sum = Number(/^flb_injector_review_duration_seconds_sum (\S+)/m.exec(metrics)?.[1]);
  const count = Number(/^flb_injector_review_duration_seconds_count (\S+)/m.exec(metrics)?.[1]);
  const buckets = [...metrics.matchAll(/^flb_injector_review_duration_seconds_bucket\{le="([^"]+)"\} (\d+)/gm)].map((m) => ({
    le: m[1] ?? '',
    count: Number(m[2]),
  }));
  const outcomes = [...metrics.matchAll(/^flb_injector_(admission_reviews|skips)_total\{(\w+)="([^"]+)"\} (\d+)/gm)].map((m) => `${m[1]} ${m[3]}: ${m[4]}`);
  const rows = [
    { run: 'no webhook', pods, 'pods/s': pods / plainSeconds, injected: 0 },
    { run: 'flb webhook', pods, 'pods/s': pods / meshed.seconds, injected: meshed.injected },
  ];
  const file = report(
    'webhook-apiserver',
    `${pods} pods through a real kube-apiserver, ${concurrency} at a time; ratio with/without webhook = ${(plainSeconds / meshed.seconds).toFixed(2)}`,
    rows,
    {
      outcomes,
      webhookLatency: {
        meanMs: (1000 * sum) / count,
        p50UpperBoundMs: 1000 * histogramQuantile(metrics, name, 0.5),
        p99UpperBoundMs: 1000 * histogramQuantile(metrics, name, 0.99),
        reviews: count,
        buckets,
      },
    },
  );
  process.stdout.write(
    `\nWebhook's own latency over ${count} reviews: mean ${((1000 * sum) / count).toFixed(3)} ms, p50 <= ${1000 * histogramQuantile(metrics, name, 0.5)} ms, p99 <= ${1000 * histogramQuantile(metrics, name, 0.99)} ms\n` +
      buckets.map((b) => `  le ${b.le.padEnd(7)} ${b.count}`).join('\n') +
      `\n${outcomes.join('\n')}` +
      '\n',
  );
  if (meshed.injected !== pods) throw new Error(`only ${meshed.injected} of ${pods} pods were injected`);
  progress(`results in ${file}`);
} finally {
  await stop(injector);
  await plane.stop();
}
