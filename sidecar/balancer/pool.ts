import type { Endpoint, Service, ServicePolicy } from '../../common/contract/catalog.js';
import { createBalancer, hashString, mix32, type Algorithm, type Balancer, type Candidate, type Random } from './algorithms.js';
import { systemClock, type Clock } from './clock.js';
import { ActiveHealthChecker, type ActiveHealth, type HealthTarget } from './health.js';
import { OutlierDetector, type Outcome } from './outlier.js';

export type { Outcome } from './outlier.js';
export type { ActiveHealth } from './health.js';

export interface Locality {
  zone?: string | undefined;
  cluster?: string | undefined;
}

export interface PickContext {
  /** The service port the client dialled (on the VIP); the first port when absent. */
  servicePort?: number;
  /** For ring-hash on source-ip. */
  sourceIp?: string;
  /** For ring-hash on a header; names come as the policy spells them. */
  header?(name: string): string | undefined;
  /** For ring-hash on a cookie. */
  cookie?(name: string): string | undefined;
  /** Keys already tried for this connection or request: a retry goes to another endpoint. */
  exclude?: ReadonlySet<string>;
}

export interface PickedEndpoint {
  /** `address|port`, the handle for begin(), end() and report(). */
  readonly key: string;
  readonly address: string;
  /** The port to dial for the requested service port. */
  readonly port: number;
  readonly priority: number;
  readonly zone: string | undefined;
  readonly cluster: string | undefined;
  readonly endpoint: Endpoint;
}

export type LevelLocality = 'zone' | 'cluster' | 'other' | 'any';

export type PoolEvent =
  | { type: 'ejected'; service: string; key: string; untilMs: number; ejections: number }
  | { type: 'unejected'; service: string; key: string }
  | { type: 'health'; service: string; key: string; state: 'healthy' | 'unhealthy' }
  | { type: 'panic'; service: string; panic: boolean };

export interface PoolOptions {
  clock?: Clock;
  random?: Random;
  /** Run the policy's active health checks (default true); tests drive setActiveHealth() instead. */
  activeHealthChecks?: boolean;
  onEvent?(event: PoolEvent): void;
}

/** Monotonic totals and current gauges, for the proxy's Prometheus metrics. */
export interface PoolCounters {
  ejectionsTotal: number;
  /** Ejections refused because maxEjectionPercent was reached. */
  ejectionsOverflowTotal: number;
  healthChecksTotal: number;
  healthCheckFailuresTotal: number;
  /** Picks made in panic mode. */
  panicPicksTotal: number;
  /** Picks that found no endpoint (none registry-healthy, or all excluded). */
  noEndpointTotal: number;
  endpoints: number;
  usable: number;
  ejected: number;
  activeUnhealthy: number;
  inFlight: number;
  panic: boolean;
}

export interface EndpointSnapshot {
  key: string;
  address: string;
  port: number;
  weight: number;
  zone?: string;
  cluster?: string;
  priority: number;
  registryHealthy: boolean;
  activeHealth: ActiveHealth;
  ejected: boolean;
  ejectedUntil?: string;
  ejections: number;
  inFlight: number;
  usable: boolean;
}

export interface PoolSnapshot {
  service: string;
  algorithm: Algorithm;
  panic: boolean;
  levels: { priority: number; locality: LevelLocality; loadPercent: number; endpoints: string[] }[];
  endpoints: EndpointSnapshot[];
}

export function endpointKey(address: string, port: number): string {
  return `${address}|${port}`;
}

class EndpointState implements Candidate {
  address: string;
  weight = 1;
  priority = 0;
  zone: string | undefined;
  cluster: string | undefined;
  registryHealthy = true;
  active: ActiveHealth = 'unknown';
  ejected = false;
  inFlight = 0;
  /** What pick() returns, one per service port, made once per update. */
  targets: PickedEndpoint[] = [];

  constructor(
    readonly key: string,
    public endpoint: Endpoint,
  ) {
    this.address = endpoint.address;
  }

  assign(endpoint: Endpoint, ports: Service['ports']): void {
    this.endpoint = endpoint;
    this.address = endpoint.address;
    this.weight = endpoint.weight;
    this.priority = endpoint.priority;
    this.zone = endpoint.zone;
    this.cluster = endpoint.cluster;
    this.registryHealthy = endpoint.healthy;
    this.targets = ports.map((servicePort, i) =>
      Object.freeze({
        key: this.key,
        address: endpoint.address,
        port: resolvePort(endpoint, servicePort, i),
        priority: endpoint.priority,
        zone: endpoint.zone,
        cluster: endpoint.cluster,
        endpoint,
      }),
    );
  }

  usable(): boolean {
    return this.registryHealthy && this.weight > 0 && this.active !== 'unhealthy' && !this.ejected;
  }
}

/**
 * The endpoint port for a service port: the endpoint's own entry for that port's name, else its
 * `port` for the service's first port, else the service port's targetPort, else the port itself.
 */
export function resolvePort(endpoint: Endpoint, servicePort: Service['ports'][number], index: number): number {
  const named = servicePort.name !== undefined ? endpoint.ports?.[servicePort.name] : undefined;
  if (named !== undefined) return named;
  if (index === 0) return endpoint.port;
  return servicePort.targetPort ?? servicePort.port;
}

interface Level {
  readonly priority: number;
  readonly locality: LevelLocality;
  readonly candidates: EndpointState[];
  readonly balancer: Balancer;
  readonly load: number;
  /** Cumulative load up to and including this level, for the draw that picks a level. */
  readonly upTo: number;
}

interface Plan {
  /** Levels that have usable endpoints, in failover order (some may get no load). */
  readonly levels: Level[];
  /** The one level with all the load, in the common case: no draw needed. */
  readonly only: Level | undefined;
  readonly panic: boolean;
}

const EMPTY_PLAN: Plan = { levels: [], only: undefined, panic: false };

/**
 * One service's endpoints as the outbound proxy sees them: which may serve (registry health,
 * active checks, passive ejection, weight), in which failover order (priority, then locality),
 * and by which algorithm the next connection or request picks among them.
 *
 * Selection, rebuilt only when some state changes (pick() is on the hot path):
 * 1. An endpoint is usable when the registry says healthy, its weight is above 0, its active
 *    check has not failed and it is not ejected.
 * 2. Endpoints with a weight form levels: by priority (lowest first), then within a priority by
 *    locality: the sidecar's zone, then its cluster, then the rest (as `locality.prefer` says).
 * 3. Traffic is shared over levels as Envoy shares it over priorities, with the overprovisioning
 *    factor 100 / minHealthyPercent: a level whose usable share is at least minHealthyPercent
 *    takes all the traffic that reaches it; below that it keeps usable% * factor of it and the
 *    rest spills to the next level. (The default 70% is Envoy's default factor of 1.4, give or
 *    take.) Spilling is gradual so that the survivors of a half-dead zone are not handed the whole
 *    zone's load. When all levels together are short, their shares are scaled up to 100%.
 * 4. Panic: when no endpoint at all is usable, the levels are built again from the registry-healthy
 *    endpoints, ignoring active checks and ejections, as Envoy does below its panic threshold:
 *    a guess at an endpoint that may be back beats failing every request. Endpoints the registry
 *    marks unhealthy are never chosen, not even then.
 * 5. The service's algorithm picks within the chosen level.
 */
export class EndpointPool {
  private readonly states = new Map<string, EndpointState>();
  private readonly clockSource: Clock;
  private readonly randomSource: Random;
  private readonly outlier: OutlierDetector;
  private readonly checker: ActiveHealthChecker | undefined;
  private serviceId = '';
  private algorithm: Algorithm = 'round-robin';
  private hashOn: { on: 'source-ip' | 'header' | 'cookie'; name?: string | undefined } | undefined;
  private ringSize = 1024;
  private servicePorts: number[] = [];
  private locality: Locality = {};
  private localityPolicy: ServicePolicy['locality'] = { prefer: 'zone', minHealthyPercent: 70 };
  private connectPolicy: ServicePolicy['connect'] = { timeoutMs: 1000, retries: 2 };
  private plan: Plan = EMPTY_PLAN;
  private dirty = true;
  private closed = false;
  private totals = { panicPicksTotal: 0, noEndpointTotal: 0 };

  constructor(private readonly options: PoolOptions = {}) {
    this.clockSource = options.clock ?? systemClock;
    this.randomSource = options.random ?? Math.random;
    this.outlier = new OutlierDetector({
      clock: this.clockSource,
      onEject: (key, untilMs, ejections) => {
        const state = this.states.get(key);
        if (state) state.ejected = true;
        this.dirty = true;
        this.emit({ type: 'ejected', service: this.serviceId, key, untilMs, ejections });
      },
      onUneject: (key) => {
        const state = this.states.get(key);
        if (state) state.ejected = false;
        this.dirty = true;
        this.emit({ type: 'unejected', service: this.serviceId, key });
      },
    });
    this.checker =
      options.activeHealthChecks === false
        ? undefined
        : new ActiveHealthChecker({
            clock: this.clockSource,
            random: this.randomSource,
            onChange: (key, state) => this.setActiveHealth(key, state),
          });
  }

  /** The service's id, once updated. */
  get service(): string {
    return this.serviceId;
  }

  /** The clock and random source the pool runs on (the attempt planner's backoff uses them too). */
  get clock(): Clock {
    return this.clockSource;
  }

  get random(): Random {
    return this.randomSource;
  }

  /** Connect timeout and retries on other endpoints, for the proxy's dial loop. */
  get connect(): Readonly<ServicePolicy['connect']> {
    return this.connectPolicy;
  }

  /**
   * Applies a (new version of the) service. Endpoints are matched by `address|port`: one that
   * remains keeps its active health, ejection and in-flight count, so a new service file changes
   * what it changes and nothing else. Connections under way are the proxy's and are not touched.
   */
  update(service: Service, locality: Locality = {}): void {
    if (this.closed) throw new Error(`the pool of ${service.id} is closed`);
    const policy = service.policy;
    this.serviceId = service.id;
    this.algorithm = policy.loadBalancer.algorithm;
    this.hashOn = policy.loadBalancer.algorithm === 'ring-hash' ? policy.loadBalancer.hash : undefined;
    this.ringSize = policy.loadBalancer.ringSize;
    this.servicePorts = service.ports.map((p) => p.port);
    this.locality = { zone: locality.zone, cluster: locality.cluster };
    this.localityPolicy = policy.locality;
    this.connectPolicy = policy.connect;

    const seen = new Set<string>();
    for (const endpoint of service.endpoints) {
      const key = endpointKey(endpoint.address, endpoint.port);
      seen.add(key);
      let state = this.states.get(key);
      if (!state) {
        state = new EndpointState(key, endpoint);
        this.states.set(key, state);
      }
      state.assign(endpoint, service.ports);
    }
    for (const key of this.states.keys()) if (!seen.has(key)) this.states.delete(key);

    const eligible = new Set<string>();
    for (const state of this.states.values()) if (state.registryHealthy && state.weight > 0) eligible.add(state.key);
    this.outlier.configure(policy.outlierDetection);
    this.outlier.setEndpoints(this.states.keys(), eligible);

    if (this.checker) {
      const check = policy.healthCheck;
      const targets: HealthTarget[] = [];
      // Endpoints that cannot be chosen anyway are not probed.
      for (const key of eligible) {
        const state = this.states.get(key)!;
        targets.push({ key, address: state.address, port: check?.port ?? state.endpoint.port });
      }
      this.checker.update(check, targets);
      for (const state of this.states.values()) state.active = this.checker.state(state.key);
    }
    for (const state of this.states.values()) state.ejected = this.outlier.isEjected(state.key);
    this.dirty = true;
  }

  /** The endpoint for the next connection or request; undefined when none may be chosen. */
  pick(ctx: PickContext = {}): PickedEndpoint | undefined {
    if (this.dirty) this.rebuild();
    const plan = this.plan;
    const portIndex = ctx.servicePort === undefined ? 0 : this.servicePorts.indexOf(ctx.servicePort);
    if (plan.levels.length === 0 || portIndex < 0) {
      this.totals.noEndpointTotal++;
      return undefined;
    }
    const hash = this.hashOn === undefined ? 0 : this.hashOf(ctx);
    const exclude = ctx.exclude;
    if (exclude !== undefined && exclude.size > 0) return this.pickExcluding(plan, hash, exclude, portIndex);
    const level = plan.only ?? this.chooseLevel(plan, hash);
    if (plan.panic) this.totals.panicPicksTotal++;
    return level.candidates[level.balancer.pick(hash)]!.targets[portIndex];
  }

  /**
   * The endpoint `key` for the service port, when it may be chosen now (usable: registry-healthy,
   * weighted, not failing its active check, not ejected); else undefined, and the caller balances.
   * For an app that dialled an endpoint itself (`directDial: keep`): its choice stands while the
   * endpoint is healthy, whatever the levels and the algorithm would say.
   */
  pickKept(key: string, servicePort?: number): PickedEndpoint | undefined {
    const state = this.states.get(key);
    if (state === undefined || !state.usable()) return undefined;
    const portIndex = servicePort === undefined ? 0 : this.servicePorts.indexOf(servicePort);
    return portIndex < 0 ? undefined : state.targets[portIndex];
  }

  /**
   * What a retry would find: an endpoint not in `tried`, only tried ones, or none that may be
   * chosen (for the attempt planner; the same candidates pick() chooses from).
   */
  remaining(tried: ReadonlySet<string>, servicePort?: number): 'untried' | 'tried' | 'none' {
    if (this.dirty) this.rebuild();
    const levels = this.plan.levels;
    if (levels.length === 0 || (servicePort !== undefined && !this.servicePorts.includes(servicePort))) return 'none';
    for (const level of levels) for (const candidate of level.candidates) if (!tried.has(candidate.key)) return 'untried';
    return 'tried';
  }

  /** A connection or request to `key` starts (least-request counts these). */
  begin(key: string): void {
    const state = this.states.get(key);
    if (state) state.inFlight++;
  }

  /** It ended; with an outcome, that outcome also feeds outlier detection. */
  end(key: string, outcome?: Outcome): void {
    const state = this.states.get(key);
    // An endpoint removed and added back while a request was under way starts again from 0.
    if (state && state.inFlight > 0) state.inFlight--;
    if (outcome !== undefined) this.report(key, outcome);
  }

  /** An outcome without in-flight accounting (say, one HTTP response on a pooled connection). */
  report(key: string, outcome: Outcome): void {
    if (this.states.has(key)) this.outlier.report(key, outcome);
  }

  /** Sets an endpoint's active health (the checker does; so may tests or another prober). */
  setActiveHealth(key: string, state: ActiveHealth): void {
    const endpoint = this.states.get(key);
    if (!endpoint || endpoint.active === state) return;
    endpoint.active = state;
    this.dirty = true;
    if (state !== 'unknown') this.emit({ type: 'health', service: this.serviceId, key, state });
  }

  counters(): PoolCounters {
    if (this.dirty) this.rebuild();
    let usable = 0;
    let ejected = 0;
    let activeUnhealthy = 0;
    let inFlight = 0;
    for (const state of this.states.values()) {
      if (state.usable()) usable++;
      if (state.ejected) ejected++;
      if (state.active === 'unhealthy') activeUnhealthy++;
      inFlight += state.inFlight;
    }
    return {
      ejectionsTotal: this.outlier.ejectionsTotal,
      ejectionsOverflowTotal: this.outlier.ejectionsOverflowTotal,
      healthChecksTotal: this.checker?.checksTotal ?? 0,
      healthCheckFailuresTotal: this.checker?.failuresTotal ?? 0,
      panicPicksTotal: this.totals.panicPicksTotal,
      noEndpointTotal: this.totals.noEndpointTotal,
      endpoints: this.states.size,
      usable,
      ejected,
      activeUnhealthy,
      inFlight,
      panic: this.plan.panic,
    };
  }

  /** Everything the admin endpoint shows about this service's endpoints. */
  snapshot(): PoolSnapshot {
    if (this.dirty) this.rebuild();
    return {
      service: this.serviceId,
      algorithm: this.algorithm,
      panic: this.plan.panic,
      levels: this.plan.levels.map((level) => ({
        priority: level.priority,
        locality: level.locality,
        loadPercent: Math.round(level.load * 10_000) / 100,
        endpoints: level.candidates.map((c) => c.key),
      })),
      endpoints: [...this.states.values()].map((state) => {
        const until = this.outlier.ejectedUntil(state.key);
        return {
          key: state.key,
          address: state.address,
          port: state.endpoint.port,
          weight: state.weight,
          ...(state.zone !== undefined && { zone: state.zone }),
          ...(state.cluster !== undefined && { cluster: state.cluster }),
          priority: state.priority,
          registryHealthy: state.registryHealthy,
          activeHealth: state.active,
          ejected: state.ejected,
          ...(until !== undefined && { ejectedUntil: new Date(until).toISOString() }),
          ejections: this.outlier.ejections(state.key),
          inFlight: state.inFlight,
          usable: state.usable(),
        };
      }),
    };
  }

  /** Stops health checks and ejection timers; the service is gone from this sidecar. */
  close(): void {
    this.closed = true;
    this.checker?.stop();
    this.outlier.stop();
  }

  private emit(event: PoolEvent): void {
    this.options.onEvent?.(event);
  }

  private hashOf(ctx: PickContext): number {
    const hashOn = this.hashOn!;
    let key: string | undefined;
    if (hashOn.on === 'source-ip') key = ctx.sourceIp;
    else if (hashOn.on === 'header') key = ctx.header?.(hashOn.name!);
    else key = ctx.cookie?.(hashOn.name!);
    // Nothing to hash on (no such header): any endpoint will do, as in Envoy.
    return key === undefined ? (this.randomSource() * 4294967296) >>> 0 : hashString(key);
  }

  /**
   * A draw in [0, 1) against the levels' cumulative loads. Ring-hash derives it from the key's
   * hash (remixed, so it is independent of the ring position) to keep a key on one level.
   */
  private chooseLevel(plan: Plan, hash: number): Level {
    const draw = this.hashOn === undefined ? this.randomSource() : mix32(hash ^ 0x9e3779b9) / 4294967296;
    let last = plan.levels[0]!;
    for (const level of plan.levels) {
      if (level.load <= 0) continue;
      if (draw < level.upTo) return level;
      last = level;
    }
    return last;
  }

  /** Retries: the level the draw gives first, then every other level in failover order. */
  private pickExcluding(plan: Plan, hash: number, exclude: ReadonlySet<string>, portIndex: number): PickedEndpoint | undefined {
    const first = plan.only ?? this.chooseLevel(plan, hash);
    for (const level of [first, ...plan.levels.filter((l) => l !== first)]) {
      const i = level.balancer.pickExcluding(hash, exclude);
      if (i >= 0) {
        if (plan.panic) this.totals.panicPicksTotal++;
        return level.candidates[i]!.targets[portIndex];
      }
    }
    this.totals.noEndpointTotal++;
    return undefined;
  }

  private rebuild(): void {
    this.dirty = false;
    const wasPanic = this.plan.panic;
    const members = [...this.states.values()].filter((s) => s.weight > 0);
    let plan = this.buildPlan(members, (s) => s.usable(), false);
    if (plan.levels.length === 0) plan = this.buildPlan(members, (s) => s.registryHealthy, true);
    this.plan = plan;
    if (plan.panic !== wasPanic) this.emit({ type: 'panic', service: this.serviceId, panic: plan.panic });
  }

  private buildPlan(members: EndpointState[], usable: (s: EndpointState) => boolean, panic: boolean): Plan {
    const groups = new Map<string, { priority: number; tier: number; members: EndpointState[] }>();
    for (const state of members) {
      const tier = this.tierOf(state);
      const id = `${state.priority}/${tier}`;
      let group = groups.get(id);
      if (!group) groups.set(id, (group = { priority: state.priority, tier, members: [] }));
      group.members.push(state);
    }
    const ordered = [...groups.values()].sort((a, b) => a.priority - b.priority || a.tier - b.tier);
    const { minHealthyPercent } = this.localityPolicy;
    // Envoy's priority load with overprovisioning factor 100 / minHealthyPercent, computed as
    // usable * 100 / (members * minHealthyPercent) so that exactly minHealthyPercent scores 1.
    let remaining = 1;
    const shaped = ordered.map((group) => {
      const candidates = group.members.filter(usable);
      const score = candidates.length === 0 ? 0 : Math.min(1, (candidates.length * 100) / (group.members.length * minHealthyPercent));
      const load = Math.min(remaining, score);
      remaining -= load;
      return { ...group, candidates, load };
    });
    const total = 1 - remaining;
    if (total <= 0) return { levels: [], only: undefined, panic };
    // All the service's weight, healthy or not, so health changes never resize the ring (see RingHash).
    const ringWeightBasis = members.reduce((sum, s) => sum + s.weight, 0);
    let upTo = 0;
    const levels: Level[] = [];
    for (const group of shaped) {
      if (group.candidates.length === 0) continue;
      const load = group.load / total;
      upTo += load;
      levels.push({
        priority: group.priority,
        locality: this.tierName(group.tier),
        candidates: group.candidates,
        balancer: createBalancer(this.algorithm, group.candidates, { random: this.randomSource, ringSize: this.ringSize, ringWeightBasis }),
        load,
        upTo,
      });
    }
    const loaded = levels.filter((l) => l.load > 0);
    return { levels, only: loaded.length === 1 ? loaded[0] : undefined, panic };
  }

  /** 0: the sidecar's zone, 1: its cluster, 2: elsewhere (or no preference). */
  private tierOf(state: EndpointState): number {
    const { prefer } = this.localityPolicy;
    const { zone, cluster } = this.locality;
    if (prefer === 'none') return 2;
    if (prefer === 'zone' && zone !== undefined && state.zone === zone) return 0;
    if (cluster !== undefined && state.cluster === cluster) return 1;
    return 2;
  }

  private tierName(tier: number): LevelLocality {
    if (this.localityPolicy.prefer === 'none') return 'any';
    return tier === 0 ? 'zone' : tier === 1 ? 'cluster' : 'other';
  }
}
