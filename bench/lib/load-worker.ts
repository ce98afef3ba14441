// Runs one autocannon load in its own process (pinned to a core by the caller) and prints the
// result as JSON on stdout.
import autocannon from 'autocannon';

interface LoadOptions {
  url: string;
  body: string;
  ca: string;
  connections: number;
  durationSeconds: number;
}

const options = JSON.parse(process.argv[2]!) as LoadOptions;
const result = await autocannon({
  url: options.url,
  method: 'POST',
  body: options.body,
  headers: { 'content-type': 'application/json' },
  connections: options.connections,
  duration: options.durationSeconds,
  tlsOptions: { ca: options.ca },
  // autocannon reads latencies in ms with microsecond decimals.
} as autocannon.Options);
process.stdout.write(
  `${JSON.stringify({
    requests: result.requests.total,
    rps: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    p999: result.latency.p99_9 ?? result.latency.p99,
    max: result.latency.max,
    errors: result.errors,
    non2xx: result.non2xx,
    timeouts: result.timeouts,
  })}\n`,
);
