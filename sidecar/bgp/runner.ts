// `flb bgp --config FILE`: the announcer on its own, for hosts without a sidecar. Reads the BGP
// section of the contract from a YAML or JSON file (refused at start, naming each bad field), puts
// the VIPs on lo when root (loopback.ts), serves its status on the admin address (GET /status, JSON;
// `flb bgp status` reads it) and Prometheus metrics (GET /metrics), and on SIGTERM or Ctrl-C drains (announcer.ts), takes the VIPs it
// added off lo, and exits.
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { createMetricsRegistry } from '../../common/metrics.js';
import type { Logger } from 'pino';
import type * as Yaml from 'yaml';
import { BgpSchema } from '../../common/contract/sidecar.js';
import { ContractError, parseDocument } from '../../common/contract/validate.js';
import { ActionableError, formatAddress, listenError } from '../../common/errors.js';
import { Announcer, unbuiltFields, type BgpConfig } from './announcer.js';
import { addVipsToLoopback } from './loopback.js';
import { registerBgpMetrics } from './metrics.js';

/**
 * JSON as JSON; YAML through the yaml package, loaded by a specifier esbuild cannot follow: the
 * sidecar's bundle carries this command (sidecar/cli.ts registers it) but never runs it, and yaml
 * would add 160 KB of source to every sidecar (0.3 MiB of heap, measured with the bundle loaded).
 */
async function parseConfigText(text: string): Promise<unknown> {
  if (text.trimStart().startsWith('{')) return JSON.parse(text);
  const yamlPackage = 'yaml';
  const yaml = (await import(yamlPackage)) as typeof Yaml;
  return yaml.parse(text);
}

export async function loadBgpConfig(file: string): Promise<BgpConfig> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new ActionableError(
      `cannot read the BGP configuration ${file}: ${(error as Error).message}`,
      'give --config the path of a YAML or JSON file holding the BGP section',
    );
  }
  let data: unknown;
  try {
    data = await parseConfigText(text);
  } catch (error) {
    throw new ActionableError(`${file} is not YAML or JSON: ${(error as Error).message}`);
  }
  const config = parseDocument(BgpSchema, data, file);
  // Refused, not ignored: a user who set a password must not get an unauthenticated session.
  const unbuilt = unbuiltFields(config);
  if (unbuilt.length) throw new ContractError(file, unbuilt);
  return config;
}

export interface RunningBgp {
  announcer: Announcer;
  admin: Server;
  stop(): Promise<void>;
}

export interface StartOptions {
  /** Put host-route VIPs on lo while running, when root (`flb bgp` does; tests in the machine's own namespace must not). */
  vipsOnLoopback: boolean;
}

export async function startBgp(config: BgpConfig, admin: { host: string; port: number }, log: Logger, options: StartOptions): Promise<RunningBgp> {
  const announcer = new Announcer(config, log);
  const registry = createMetricsRegistry();
  registerBgpMetrics(registry, announcer);
  const server = createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/status') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(announcer.status()));
    } else if (req.method === 'GET' && req.url === '/metrics') {
      registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
        (error: Error) => res.writeHead(500).end(`${error.message}\n`),
      );
    } else if (req.method === 'GET' && req.url === '/healthz') {
      res.writeHead(200).end('ok\n');
    } else {
      res.writeHead(404).end('not found: GET /status, /metrics or /healthz\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error) =>
      reject(listenError(error, { what: "the BGP announcer's admin endpoint", address: formatAddress(admin.host, admin.port), flag: '--admin HOST:PORT' })),
    );
    server.listen(admin.port, admin.host, () => resolve());
  });
  const vips = await addVipsToLoopback(options.vipsOnLoopback ? config.vips.map((v) => v.prefix) : [], log);
  try {
    await announcer.start();
  } catch (error) {
    server.close();
    await vips.remove();
    throw error;
  }
  log.info({ admin: `http://${formatAddress(admin.host, admin.port)}/status`, peers: config.peers.length, vips: config.vips.length }, 'BGP announcer running');
  return {
    announcer,
    admin: server,
    async stop() {
      await announcer.drain();
      await vips.remove();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
