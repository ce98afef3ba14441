/*
 * The one attempt planner: which endpoint each attempt of a connection or request goes to, whether
 * a failed attempt is tried again, and after how long. The outbound proxy's `tcp` connections,
 * HTTP/1.1 requests and upgrades, and HTTP/2 and gRPC streams all retry through it, so they behave
 * alike (see "Retries" in sidecar/README.md). Modelled on Envoy's router retry state: separate
 * budgets, a previous-hosts predicate that lets a retry go back to a tried host once every host
 * has been tried (Envoy's host_selection_retry_max_attempts running out), and jittered
 * exponential backoff between attempts.
 *
 * On the hot path: a `tcp` connection makes one planner and, when its first endpoint answers,
 * nothing else (the planner is itself the pick context; the set of tried endpoints is made on the
 * first retry).
 */
import type { ServicePolicy } from '../../common/contract/catalog.js';
import type { Clock } from './clock.js';
import type { EndpointPool, PickContext, PickedEndpoint } from './pool.js';
import type { Outcome } from './outlier.js';

export type RetryPolicy = NonNullable<ServicePolicy['retries']>;

/** The contract's backoff defaults (RetrySchema), for connect retries of a service without `retries`. */
const DEFAULT_BACKOFF_BASE_MS = 25;
const DEFAULT_BACKOFF_MAX_MS = 250;
const GRPC_UNAVAILABLE = '14';

/** Returned by the retry decisions when the attempt just failed is the last one. */
export const GIVE_UP = -1;

export class AttemptPlanner implements PickContext {
  /** Ring-hash on a header or cookie reads these (HTTP sets them). */
  header: ((name: string) => string | undefined) | undefined = undefined;
  cookie: ((name: string) => string | undefined) | undefined = undefined;
  /** Endpoints tried so far, made on the first retry (PickContext: the pool skips them). */
  exclude: Set<string> | undefined = undefined;
  /** Attempts begun so far. */
  attempts = 0;
  private target: PickedEndpoint | undefined = undefined;
  /** Every attempt's endpoint in order, once there is more than one (for errors and logs). */
  private order: string[] | undefined = undefined;
  private connectRetriesLeft: number;
  private requestRetriesLeft: number;
  private waits = 0;

  /**
   * `sourceIp` is kept for every attempt, retries included, so ring hash on the source address
   * picks as it did for the first. `idempotent`: the request may be sent again after it reached
   * an endpoint (RFC 9110's idempotent methods); a connect failure is retried whatever the method.
   */
  constructor(
    readonly pool: EndpointPool,
    readonly servicePort: number | undefined,
    readonly sourceIp: string | undefined,
    private readonly policy: RetryPolicy | undefined = undefined,
    private readonly idempotent = false,
    /** The endpoint the app dialled itself (`directDial: keep`): the first attempt goes there while it may be chosen. */
    private readonly kept: string | undefined = undefined,
  ) {
    this.connectRetriesLeft = pool.connect.retries;
    this.requestRetriesLeft = policy?.attempts ?? 0;
  }

  /** The endpoint of the attempt under way (the last one begun). */
  get current(): PickedEndpoint | undefined {
    return this.target;
  }

  /** The endpoints attempted, in order (one may appear twice once every endpoint was tried). */
  tried(): string[] {
    return this.order ?? (this.target ? [this.target.key] : []);
  }

  /**
   * Begins the next attempt (pool.begin) and returns its endpoint: one not tried yet by this
   * connection or request when there is one, else a tried one as the balancer picks it; undefined
   * when the service has no endpoint that may be chosen.
   */
  next(): PickedEndpoint | undefined {
    let target: PickedEndpoint | undefined;
    if (this.target === undefined) target = (this.kept !== undefined ? this.pool.pickKept(this.kept, this.servicePort) : undefined) ?? this.pool.pick(this);
    else {
      this.rememberCurrent();
      target = this.pool.pick(this);
      if (target === undefined) {
        const tried = this.exclude;
        this.exclude = undefined;
        target = this.pool.pick(this);
        this.exclude = tried;
      }
    }
    if (target === undefined) return undefined;
    this.target = target;
    this.attempts++;
    this.order?.push(target.key);
    this.pool.begin(target.key);
    return target;
  }

  /** The attempt under way is over (least-request's count); with an outcome, outlier detection hears it. */
  end(outcome?: Outcome): void {
    if (this.target !== undefined) this.pool.end(this.target.key, outcome);
  }

  /**
   * The attempt could not connect (refused, unreachable, or no connection within the connect
   * timeout): nothing reached the endpoint, so any request may go again while `connect.retries`
   * lasts, if the caller can still send it whole (`replayable`). Ends the attempt as a connect
   * failure. Returns the milliseconds to wait before next(), or GIVE_UP.
   */
  retryAfterConnectFailure(replayable = true): number {
    this.end('connect-failure');
    if (!replayable || this.connectRetriesLeft <= 0) return GIVE_UP;
    this.connectRetriesLeft--;
    // Failing over to an endpoint not tried yet is immediate: that is the point of connect retries.
    return this.delay(true);
  }

  /**
   * The endpoint answered `status` (and `grpcStatus` for a gRPC Trailers-Only answer). Retried
   * when the policy's `on` names it (`5xx`, `gateway-error` for 502/503/504, `unavailable` for
   * gRPC status 14), `retries.attempts` lasts, the request can be sent whole again (`replayable`),
   * and it may be repeated: an idempotent method, or any call refused with UNAVAILABLE. When it is
   * retried the attempt is ended as a 5xx; otherwise the answer is the caller's to pass on, and to
   * end() when it is over. Returns the milliseconds to wait before next(), or GIVE_UP.
   */
  retryAfterResponse(status: number, grpcStatus: string | undefined, replayable: boolean): number {
    const on = this.policy?.on;
    if (on === undefined) return GIVE_UP;
    const gatewayError = status === 502 || status === 503 || status === 504;
    const failed = (status >= 500 && on.includes('5xx')) || (gatewayError && on.includes('gateway-error'));
    const unavailable = !failed && grpcStatus === GRPC_UNAVAILABLE && on.includes('unavailable');
    if (!(failed || unavailable) || !replayable || !(this.idempotent || unavailable) || this.requestRetriesLeft <= 0) return GIVE_UP;
    const delay = this.delay(false);
    if (delay === GIVE_UP) return GIVE_UP;
    this.requestRetriesLeft--;
    this.end('5xx');
    return delay;
  }

  /** The endpoint reset the request before answering: retried when `on` names `reset`. Ends the attempt as a reset. */
  retryAfterReset(replayable: boolean): number {
    this.end('reset');
    return this.requestRetry('reset', replayable);
  }

  /** No answer within `retries.perTryTimeoutMs`: retried when `on` names `gateway-error`. Ends the attempt as a reset. */
  retryAfterTimeout(replayable: boolean): number {
    this.end('reset');
    return this.requestRetry('gateway-error', replayable);
  }

  /** Waits `ms` on the pool's clock. */
  wait(ms: number): Promise<void> {
    return ms <= 0 ? Promise.resolve() : new Promise((resolve) => this.pool.clock.setTimer(resolve, ms));
  }

  private requestRetry(condition: 'reset' | 'gateway-error', replayable: boolean): number {
    if (!this.policy?.on.includes(condition) || !replayable || !this.idempotent || this.requestRetriesLeft <= 0) return GIVE_UP;
    const delay = this.delay(false);
    if (delay !== GIVE_UP) this.requestRetriesLeft--;
    return delay;
  }

  /**
   * GIVE_UP when no endpoint may be chosen at all; 0 for a connect retry that can go to an endpoint
   * not tried yet; otherwise the n-th wait of this request: a random time in [c/2, c], where
   * c = min(backoffMaxMs, backoffBaseMs x 2^(n-1)), so retries of many clients do not arrive together.
   */
  private delay(connectFailure: boolean): number {
    this.rememberCurrent();
    const remaining = this.pool.remaining(this.exclude!, this.servicePort);
    if (remaining === 'none') return GIVE_UP;
    if (connectFailure && remaining === 'untried') return 0;
    const base = this.policy?.backoffBaseMs ?? DEFAULT_BACKOFF_BASE_MS;
    const max = this.policy?.backoffMaxMs ?? DEFAULT_BACKOFF_MAX_MS;
    const ceiling = Math.min(max, base * 2 ** this.waits++);
    return ceiling / 2 + this.pool.random() * (ceiling / 2);
  }

  /** Adds the attempt under way to the tried set, made here on the first retry (the common path never needs it). */
  private rememberCurrent(): void {
    const key = this.target!.key;
    if (this.exclude === undefined) {
      this.exclude = new Set([key]);
      this.order = [key];
    } else this.exclude.add(key);
  }
}

/** For callbacks that must wait on a clock (the native forwarder's connections): `ms` 0 runs `then` now. */
export function after(clock: Clock, ms: number, then: () => void): void {
  if (ms <= 0) then();
  else clock.setTimer(then, ms);
}
