// A real Consul agent for tests and the dev environment: `consul agent -dev` (v1.16.1, built by
// setup.sh from test-e2e/servers/consul) on free loopback ports, with a small client for what the
// tests do to it (register, flip a check, deregister). A dev agent is a server and keeps
// everything in memory: stopped and started again, it is empty.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testBinary } from './cache.js';
import { freePorts } from './controlplane.js';
import { startReaper, startServer, type ServerProcess } from './processes.js';

export interface ConsulAgent {
  /** The HTTP API, e.g. http://127.0.0.1:41234 (https:// with `tls`) */
  readonly url: string;
  readonly datacenter: string;
  /** The node the agent registers itself as (services registered through it run there). */
  readonly node: string;
  readonly process: ServerProcess;
  isRunning(): boolean;
  /** Stops the agent; what it held is gone. */
  halt(): Promise<void>;
  /** Starts it again on the same ports, empty, and waits until it answers. */
  resume(): Promise<void>;
  /** One HTTP call to the agent's API; the body is JSON when it parses. */
  api(method: string, path: string, body?: unknown): Promise<{ status: number; body: unknown; index?: string }>;
  stop(): Promise<void>;
}

export interface ConsulOptions {
  datacenter?: string;
  node?: string;
  /** Seconds to wait for the agent to elect itself and answer. */
  startTimeoutSeconds?: number;
  /** HTTPS only, with this certificate (PEM); the API client trusts `caPem` and checks the certificate against `serverName`. */
  tls?: { caPem: string; certPem: string; keyPem: string; serverName: string };
  /** ACLs on, default deny, with this management token (the API client sends it). */
  aclManagementToken?: string;
}

export async function startConsul(options: ConsulOptions = {}): Promise<ConsulAgent> {
  const binary = testBinary('consul');
  const datacenter = options.datacenter ?? 'dc1';
  const node = options.node ?? 'consul-dev';
  const dir = mkdtempSync(join(tmpdir(), 'flb-consul-'));
  const reaper = startReaper(dir);
  const [http, dns, serfLan, serfWan, server, grpc] = await freePorts(6);
  const tls = options.tls;
  const url = `${tls ? 'https' : 'http'}://127.0.0.1:${http}`;
  const file = (name: string, content: string) => {
    const path = join(dir, name);
    writeFileSync(path, content, { mode: 0o600 });
    return path;
  };
  // A dev agent also opens gRPC over TLS on 8503 unless told not to: it must not take a fixed port.
  const hcl = [tls ? `ports { grpc_tls = -1, http = -1, https = ${http} }` : 'ports { grpc_tls = -1 }'];
  if (tls) {
    const [ca, cert, key] = [file('ca.pem', tls.caPem), file('cert.pem', tls.certPem), file('key.pem', tls.keyPem)];
    hcl.push(`tls { defaults { ca_file = "${ca}", cert_file = "${cert}", key_file = "${key}", verify_incoming = false } }`);
  }
  if (options.aclManagementToken) {
    const token = options.aclManagementToken;
    hcl.push(`acl { enabled = true, default_policy = "deny", tokens { initial_management = "${token}", agent = "${token}" } }`);
  }
  const args = [
    'agent',
    '-dev',
    '-bind=127.0.0.1',
    '-client=127.0.0.1',
    `-datacenter=${datacenter}`,
    `-node=${node}`,
    ...(tls ? [] : [`-http-port=${http}`]),
    `-dns-port=${dns}`,
    `-serf-lan-port=${serfLan}`,
    `-serf-wan-port=${serfWan}`,
    `-server-port=${server}`,
    `-grpc-port=${grpc}`,
    ...hcl.map((h) => `-hcl=${h}`),
    '-log-level=warn',
  ];
  const agent = tls ? new HttpsAgent({ ca: tls.caPem, servername: tls.serverName }) : undefined;
  let proc: ServerProcess | undefined;
  const api: ConsulAgent['api'] = (method, path, body) =>
    new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
      const headers: Record<string, string> = {
        ...(payload ? { 'content-type': 'application/json', 'content-length': String(payload.length) } : {}),
        ...(options.aclManagementToken ? { 'x-consul-token': options.aclManagementToken } : {}),
      };
      const req = (tls ? httpsRequest : httpRequest)(new URL(path, url), { method, timeout: 10_000, headers, ...(agent ? { agent } : {}) }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = text;
          try {
            parsed = JSON.parse(text);
          } catch {
            // Plain text answers (errors, `true`) stay text.
          }
          const index = res.headers['x-consul-index'];
          resolve({ status: res.statusCode ?? 0, body: parsed, ...(typeof index === 'string' ? { index } : {}) });
        });
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer from Consul within 10 s`)));
      req.on('error', reject);
      req.end(payload);
    });

  const launch = async () => {
    proc = startServer('consul', binary, args, join(dir, 'consul.log'));
    const deadline = Date.now() + (options.startTimeoutSeconds ?? 60) * 1000;
    for (;;) {
      if (!proc.isRunning()) throw new Error(`consul exited (${await proc.exited}) before it answered:\n${proc.logTail()}`);
      try {
        const leader = await api('GET', '/v1/status/leader');
        const services = await api('GET', '/v1/catalog/services');
        if (typeof leader.body === 'string' && leader.body !== '' && services.status === 200) return;
      } catch {
        // Not listening yet.
      }
      if (Date.now() > deadline) throw new Error(`consul did not elect itself within ${options.startTimeoutSeconds ?? 60} s:\n${proc.logTail()}`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  };

  try {
    await launch();
  } catch (error) {
    await proc?.stop();
    rmSync(dir, { recursive: true, force: true });
    await reaper.dismiss();
    throw error;
  }

  return {
    url,
    datacenter,
    node,
    get process() {
      return proc!;
    },
    isRunning: () => proc?.isRunning() ?? false,
    api,
    async halt() {
      await proc?.stop();
    },
    async resume() {
      if (proc?.isRunning()) return;
      await launch();
    },
    async stop() {
      await proc?.stop();
      rmSync(dir, { recursive: true, force: true });
      await reaper.dismiss();
    },
  };
}
