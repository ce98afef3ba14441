import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export const QUERY_TYPES = ['A', 'AAAA', 'SRV', 'PTR', 'TXT', 'MX', 'CNAME', 'NS', 'SOA', 'SVCB', 'HTTPS', 'ANY', 'other'] as const;
export const RESULTS = ['local', 'nodata', 'cached', 'forwarded', 'servfail', 'formerr', 'notimp', 'refused'] as const;
export type Result = (typeof RESULTS)[number];
const RESULT_INDEX = Object.fromEntries(RESULTS.map((r, i) => [r, i])) as Record<Result, number>;

function typeIndex(qtype: number): number {
  switch (qtype) {
    case 1:
      return 0;
    case 28:
      return 1;
    case 33:
      return 2;
    case 12:
      return 3;
    case 16:
      return 4;
    case 15:
      return 5;
    case 5:
      return 6;
    case 2:
      return 7;
    case 6:
      return 8;
    case 64:
      return 9;
    case 65:
      return 10;
    case 255:
      return 11;
    default:
      return 12;
  }
}

/**
 * The DNS server's counters. A prom-client `inc(labels)` hashes its labels on every call, which
 * on the hot path costs about as much as answering; so queries are counted in a plain array and
 * copied into the Prometheus counters when the registry is scraped.
 */
export class DnsMetrics {
  private readonly queries = new Float64Array(QUERY_TYPES.length * RESULTS.length);
  truncated = 0;
  cacheHits = 0;
  cacheMisses = 0;
  /** Upstream attempts by how they ended (also in the histogram, when there is a registry). */
  readonly upstreamOutcomes = { answer: 0, timeout: 0, error: 0 };
  private readonly upstreamDuration?: Histogram<'upstream' | 'outcome'>;

  constructor(registry?: Registry, cacheSize: () => number = () => 0) {
    if (!registry) return;
    const registers = [registry];
    const queries: Counter<'type' | 'result'> = new Counter({
      name: 'flb_dns_queries_total',
      help: 'DNS queries answered, by query type and result (local, nodata, cached, forwarded, servfail, formerr, notimp, refused)',
      labelNames: ['type', 'result'] as const,
      registers,
      collect: () => {
        queries.reset();
        this.queries.forEach((n, i) => {
          if (n > 0) queries.inc({ type: QUERY_TYPES[Math.floor(i / RESULTS.length)], result: RESULTS[i % RESULTS.length] }, n);
        });
      },
    });
    const truncated: Counter = new Counter({
      name: 'flb_dns_truncated_total',
      help: "UDP answers sent empty with TC set because they did not fit the client's payload size",
      registers,
      collect: () => {
        truncated.reset();
        truncated.inc(this.truncated);
      },
    });
    const hits: Counter = new Counter({
      name: 'flb_dns_cache_hits_total',
      help: 'Forwardable queries answered from the cache',
      registers,
      collect: () => {
        hits.reset();
        hits.inc(this.cacheHits);
      },
    });
    const misses: Counter = new Counter({
      name: 'flb_dns_cache_misses_total',
      help: 'Forwardable queries not in the cache (sent upstream or joined to one in flight)',
      registers,
      collect: () => {
        misses.reset();
        misses.inc(this.cacheMisses);
      },
    });
    const entries: Gauge = new Gauge({
      name: 'flb_dns_cache_entries',
      help: 'Upstream answers held in the cache',
      registers,
      collect: () => entries.set(cacheSize()),
    });
    this.upstreamDuration = new Histogram({
      name: 'flb_dns_upstream_duration_seconds',
      help: 'Time for one upstream attempt, by upstream and outcome (answer, timeout, error)',
      labelNames: ['upstream', 'outcome'] as const,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    });
  }

  count(qtype: number, result: Result): void {
    this.queries[typeIndex(qtype) * RESULTS.length + RESULT_INDEX[result]]! += 1;
  }

  upstream(upstream: string, outcome: 'answer' | 'timeout' | 'error', seconds: number): void {
    this.upstreamOutcomes[outcome] += 1;
    this.upstreamDuration?.observe({ upstream, outcome }, seconds);
  }

  /** Queries counted so far, for tests and the admin endpoint: `A/local` -> n. */
  snapshot(): Record<string, number> {
    const out: Record<string, number> = {};
    this.queries.forEach((n, i) => {
      if (n > 0) out[`${QUERY_TYPES[Math.floor(i / RESULTS.length)]}/${RESULTS[i % RESULTS.length]}`] = n;
    });
    return out;
  }
}
