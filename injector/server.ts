import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import express, { type Request, type Response } from 'express';
import type { Logger } from '../common/log.js';
import type { KubeEventRecorder } from '../common/kube-events.js';
import { badRequest, reviewBody, type AdmissionOutcome, type NamespaceLookup } from './admission.js';
import { admissionEvents } from './events.js';
import type { InjectorSettings } from './inject.js';
import { jsonText } from './json-text.js';
import type { InjectorMetrics } from './metrics.js';

/**
 * The settings to inject with now, or why there are none yet (mesh settings not loaded): the
 * webhook then answers 503, which the apiserver takes as a failed call, so the webhook's
 * failurePolicy decides, as when the injector cannot be reached.
 */
export type CurrentSettings = () => InjectorSettings | { notReady: string };

export interface WebhookServerOptions {
  host: string;
  port: number;
  /** Fixed settings, or the settings of the moment. */
  settings: InjectorSettings | CurrentSettings;
  namespaces: NamespaceLookup;
  tls: { cert: string; key: string };
  metrics: InjectorMetrics;
  log: Logger;
  /** Where Events about injections go; none when omitted. */
  events?: KubeEventRecorder;
  /** AdmissionReviews are large for real pods (many containers, big env); the apiserver caps requests at 3 MiB. */
  bodyLimit?: number;
}

export interface WebhookServer {
  readonly port: number;
  /** Serves a new certificate from the next TLS handshake on; connections already open keep theirs. */
  setCertificate(tls: { cert: string; key: string }): void;
  close(): Promise<void>;
}

/**
 * Routes other than the hot path: health, and JSON 404s. POST /mutate is served by
 * handleMutate below, not by express: measured on one core (bench/webhook.ts), express's router
 * and body parser cost a quarter of the webhook's CPU, and its res.json writes headers and body
 * separately (writev), which halved throughput against a bare node:https server.
 */
export function webhookApp(notReady: () => string | undefined = () => undefined): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');
  app.get('/healthz', (_req, res) => void res.type('text/plain').send('ok'));
  // For a readinessProbe: a replica without mesh settings takes no reviews from the Service.
  app.get('/readyz', (_req, res) => {
    const why = notReady();
    void (why === undefined ? res.type('text/plain').send('ready\n') : res.status(503).type('text/plain').send(`not ready: ${why}\n`));
  });
  app.use((req: Request, res: Response) => void res.status(404).json({ error: `no route for ${req.method} ${req.path}; the injector serves POST /mutate` }));
  return app;
}

const DEFAULT_BODY_LIMIT = 8 * 1024 * 1024;

/** Why the webhook cannot inject now, or undefined when it can. */
export function notReadyReason(settings: WebhookServerOptions['settings']): string | undefined {
  if (typeof settings !== 'function') return undefined;
  const current = settings();
  return 'notReady' in current ? current.notReady : undefined;
}

/**
 * A Kubernetes Status, so the apiserver's client reads our message and puts it in the error it
 * returns ("failed calling webhook ...: <message>"); no Retry-After, or it would retry the call.
 */
export function notReadyStatus(why: string) {
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    reason: 'ServiceUnavailable',
    code: 503,
    message: `flb-mesh injector is not ready: ${why}`,
  };
}

/** The thin shell around review(): read the body (bounded), parse, review, answer in one write, account. */
export function mutateHandler(options: Omit<WebhookServerOptions, 'host' | 'port' | 'tls'>): (req: IncomingMessage, res: ServerResponse) => void {
  const { settings, namespaces, metrics, log, events } = options;
  const limit = options.bodyLimit ?? DEFAULT_BODY_LIMIT;
  const send = (res: ServerResponse, status: number, body: unknown) => {
    const text = jsonText(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
  };
  return (req, res) => {
    const started = performance.now();
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > limit) {
      metrics.reviews.inc({ outcome: 'bad-request' });
      send(res, 413, badRequest('request body is over the size limit').body);
      req.resume();
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = false;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) tooLarge = true;
      else chunks.push(chunk);
    });
    req.on('error', () => res.destroy());
    req.on('end', () => {
      if (tooLarge) {
        metrics.reviews.inc({ outcome: 'bad-request' });
        send(res, 413, badRequest('request body is over the size limit').body);
        return;
      }
      const current = typeof settings === 'function' ? settings() : settings;
      if ('notReady' in current) {
        metrics.reviews.inc({ outcome: 'not-ready' });
        send(res, 503, notReadyStatus(current.notReady));
        return;
      }
      reviewBody(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks), namespaces, current).then(
        (outcome) => {
          metrics.observeReview(started);
          send(res, outcome.status, outcome.body);
          try {
            account(outcome, metrics, log, events);
          } catch (error) {
            // The answer is sent; a bug in the bookkeeping must not become an unhandled rejection.
            log.error({ err: error }, 'accounting for an admission review failed');
          }
        },
        (error: unknown) => {
          log.error({ err: error }, 'admission review failed');
          send(res, 500, { error: 'internal error while reviewing the pod' });
        },
      );
    });
  };
}

function account(outcome: AdmissionOutcome, metrics: InjectorMetrics, log: Logger, events: KubeEventRecorder | undefined): void {
  const r = outcome.review;
  if (!r?.result) {
    metrics.reviews.inc({ outcome: outcome.status === 200 ? 'other' : 'bad-request' });
    return;
  }
  const { result, pod, dryRun, namespace } = r;
  metrics.reviews.inc({ outcome: result.action });
  // Built only when logged: an object per review for a debug line nobody reads is garbage to collect.
  const podName = () => pod?.metadata?.name ?? `${pod?.metadata?.generateName ?? ''}*`;
  const debug = log.isLevelEnabled('debug');
  switch (result.action) {
    case 'inject':
      metrics.injections.inc({ reinvocation: String(result.reinvocation), dry_run: String(dryRun) });
      if (debug) log.debug({ namespace, pod: podName(), because: result.because, reinvocation: result.reinvocation }, 'injected');
      break;
    case 'skip':
      metrics.skips.inc({ reason: result.reason });
      if (debug) log.debug({ namespace, pod: podName(), reason: result.reason }, 'not injected');
      break;
    case 'deny':
      log.info({ namespace, pod: podName(), message: result.message }, 'pod refused');
      break;
  }
  // Dry runs must have no side effects (sideEffects: NoneOnDryRun): no Events.
  if (events && pod && !dryRun) for (const event of admissionEvents({ namespace, pod, result })) events.record(event);
}

export async function startWebhookServer(options: WebhookServerOptions): Promise<WebhookServer> {
  const app = webhookApp(() => notReadyReason(options.settings));
  const mutate = mutateHandler(options);
  const server: HttpsServer = createHttpsServer({ cert: options.tls.cert, key: options.tls.key, minVersion: 'TLSv1.2' }, (req, res) => {
    if (req.method === 'POST' && (req.url === '/mutate' || req.url?.startsWith('/mutate?'))) mutate(req, res);
    else app(req, res);
  });
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
        // Answers in flight get a moment to finish; then every connection goes.
        setTimeout(() => server.closeAllConnections(), 2000).unref();
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
