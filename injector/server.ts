import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import express, { type NextFunction, type Request, type Response } from 'express';
import type { Logger } from '../common/log.js';
import { badRequest, review, type AdmissionOutcome, type NamespaceLookup } from './admission.js';
import type { EventRecorder } from './events.js';
import type { InjectorSettings } from './inject.js';
import type { InjectorMetrics } from './metrics.js';

export interface WebhookServerOptions {
  host: string;
  port: number;
  settings: InjectorSettings;
  namespaces: NamespaceLookup;
  tls: { cert: string; key: string };
  metrics: InjectorMetrics;
  log: Logger;
  events?: EventRecorder;
  /** AdmissionReviews are large for real pods (many containers, big env); the apiserver caps requests at 3 MiB. */
  bodyLimit?: string;
}

export interface WebhookServer {
  readonly port: number;
  /** Serves a new certificate from the next TLS handshake on; connections already open keep theirs. */
  setCertificate(tls: { cert: string; key: string }): void;
  close(): Promise<void>;
}

/** The thin HTTPS shell: parse, call review(), answer, and record events and metrics. */
export function webhookApp(options: Omit<WebhookServerOptions, 'host' | 'port' | 'tls'>): express.Express {
  const { settings, namespaces, metrics, log, events } = options;
  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');
  app.get('/healthz', (_req, res) => void res.type('text/plain').send('ok'));
  app.post('/mutate', express.json({ limit: options.bodyLimit ?? '8mb', type: () => true, strict: true }), async (req: Request, res: Response) => {
    const stop = metrics.latency.startTimer();
    log.debug({ bytes: req.headers['content-length'] }, 'review received');
    let outcome: AdmissionOutcome;
    try {
      outcome = await review(req.body, namespaces, settings);
    } catch (error) {
      log.error({ err: error }, 'admission review failed');
      outcome = { status: 500, body: { error: 'internal error while reviewing the pod' } };
    }
    stop();
    res.status(outcome.status).json(outcome.body);
    account(outcome, metrics, log, events);
  });
  app.use((req: Request, res: Response) => void res.status(404).json({ error: `no route for ${req.method} ${req.path}; the injector serves POST /mutate` }));
  // express's body parser errors (bad JSON, too large) arrive here; answer in JSON, keep serving.
  app.use((error: { status?: number; type?: string; message?: string }, _req: Request, res: Response, _next: NextFunction) => {
    const status = error.status && error.status >= 400 && error.status < 500 ? error.status : 400;
    metrics.reviews.inc({ outcome: 'bad-request' });
    const message = error.type === 'entity.too.large' ? 'request body is over the size limit' : `malformed request body: ${error.message ?? 'unreadable'}`;
    res.status(status).json(badRequest(message).body);
  });
  return app;
}

function account(outcome: AdmissionOutcome, metrics: InjectorMetrics, log: Logger, events: EventRecorder | undefined): void {
  const r = outcome.review;
  if (!r?.result) {
    metrics.reviews.inc({ outcome: outcome.status === 200 ? 'other' : 'bad-request' });
    return;
  }
  const { result, pod, dryRun, namespace } = r;
  metrics.reviews.inc({ outcome: result.action });
  const podName = pod?.metadata?.name ?? `${pod?.metadata?.generateName ?? ''}*`;
  // Dry runs must have no side effects (sideEffects: NoneOnDryRun): no Events.
  const emit = !dryRun && events && pod ? events : undefined;
  switch (result.action) {
    case 'inject':
      metrics.injections.inc({ reinvocation: String(result.reinvocation), dry_run: String(dryRun) });
      log.debug({ namespace, pod: podName, because: result.because, reinvocation: result.reinvocation }, 'injected');
      emit?.record({ pod: pod!, type: 'Normal', reason: 'SidecarInjected', message: `flb-mesh sidecar injected into ${podName} (${result.because})` });
      if (result.podSecurityConflict) emit?.record({ pod: pod!, type: 'Warning', reason: 'PodSecurityConflict', message: result.podSecurityConflict });
      break;
    case 'skip':
      metrics.skips.inc({ reason: result.reason });
      log.debug({ namespace, pod: podName, reason: result.reason }, 'not injected');
      emit?.record({ pod: pod!, type: 'Normal', reason: 'SidecarInjectionSkipped', message: `${podName} not injected: ${result.reason} (${result.message})` });
      break;
    case 'deny':
      log.info({ namespace, pod: podName, message: result.message }, 'pod refused');
      emit?.record({ pod: pod!, type: 'Warning', reason: 'SidecarInjectionRefused', message: result.message });
      break;
  }
}

export async function startWebhookServer(options: WebhookServerOptions): Promise<WebhookServer> {
  const app = webhookApp(options);
  const server: HttpsServer = createHttpsServer({ cert: options.tls.cert, key: options.tls.key, minVersion: 'TLSv1.2' }, app);
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => resolve());
  });
  server.on('error', (error) => options.log.error({ err: error }, 'webhook server error'));
  return {
    port: (server.address() as AddressInfo).port,
    setCertificate(tls) {
      server.setSecureContext({ cert: tls.cert, key: tls.key, minVersion: 'TLSv1.2' });
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      }),
  };
}

/** Plain-HTTP Prometheus endpoint, on its own port so scraping needs no TLS client set-up. */
export async function startMetricsServer(host: string, port: number, metrics: InjectorMetrics): Promise<{ port: number; close(): Promise<void> }> {
  const server: HttpServer = createHttpServer((req, res) => {
    if (req.url !== '/metrics') {
      res.writeHead(404).end('see /metrics\n');
      return;
    }
    metrics.registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
      () => res.writeHead(500).end(),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
