import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** The injector's Prometheus metrics, on a registry of its own so several servers can run in one process (tests). */
export class InjectorMetrics {
  readonly registry = new Registry();
  readonly reviews = new Counter({
    name: 'flb_injector_admission_reviews_total',
    help: 'AdmissionReviews answered, by outcome (inject, skip, deny, bad-request, other; not-ready: answered 503 for want of mesh settings)',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  readonly injections = new Counter({
    name: 'flb_injector_injections_total',
    help: 'Pods injected; reinvocation="true" when only probes of new containers were rewritten',
    labelNames: ['reinvocation', 'dry_run'] as const,
    registers: [this.registry],
  });
  readonly skips = new Counter({
    name: 'flb_injector_skips_total',
    help: 'Pods not injected, by named reason',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly latency = new Histogram({
    name: 'flb_injector_review_duration_seconds',
    help: 'Time from receiving an AdmissionReview to having its answer',
    // The apiserver's own admission histogram starts at 5 ms; ours must see well below 1 ms.
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [this.registry],
  });
  private readonly reviewSeries = this.latency.labels();
  readonly eventsDropped = new Counter({
    name: 'flb_injector_events_dropped_total',
    help:
      'Kubernetes Events not raised, by reason: unverifiable (the pod has no controller of a known kind), unverified (its controller does not exist with that uid), ' +
      'protected-namespace, rate-limited (per namespace), invalid, queue-full, api-error',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  /** Read at each scrape; fixed settings (a file) are loaded and never refused. */
  meshSettingsState: () => { loaded: boolean; refused: boolean } = () => ({ loaded: true, refused: false });
  readonly meshSettingsLoaded: Gauge = new Gauge({
    name: 'flb_injector_mesh_settings_loaded',
    help: '1 once good mesh settings are in use; 0 before: reviews are answered 503 and the failurePolicy decides',
    registers: [this.registry],
    collect: (): void => this.meshSettingsLoaded.set(this.meshSettingsState().loaded ? 1 : 0),
  });
  readonly meshSettingsRefused: Gauge = new Gauge({
    name: 'flb_injector_mesh_settings_refused',
    help: '1 while the mesh settings ConfigMap is refused (bad edit, key or object missing); the last good settings, if any, stay in use',
    registers: [this.registry],
    collect: (): void => this.meshSettingsRefused.set(this.meshSettingsState().refused ? 1 : 0),
  });
  readonly certificateExpiry = new Gauge({
    name: 'flb_injector_certificate_expiry_timestamp_seconds',
    help: 'When the serving certificate expires (Unix time)',
    registers: [this.registry],
  });
  readonly certificateRenewals = new Counter({
    name: 'flb_injector_certificate_renewals_total',
    help: 'Serving certificates taken into use after the first',
    registers: [this.registry],
  });
  readonly certificateReloadsRefused = new Counter({
    name: 'flb_injector_certificate_reloads_refused_total',
    help: 'Changes of the mounted certificate files (--tls-dir) not taken (unreadable, not PEM, key and certificate apart, expired): the certificate served before stays',
    registers: [this.registry],
  });

  constructor(withProcessMetrics = true) {
    if (withProcessMetrics) collectDefaultMetrics({ register: this.registry });
  }

  /**
   * Records one review's duration, from performance.now() at its start, on the histogram's
   * unlabelled child: startTimer() (hrtime, a closure, label hashing) cost 1.4 us and 1.3 KiB per
   * review, a twentieth of the webhook's own work.
   */
  observeReview(startedMs: number): void {
    this.reviewSeries.observe((performance.now() - startedMs) / 1000);
  }
}
