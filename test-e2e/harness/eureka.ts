// A real Eureka server (Spring Cloud Netflix, built by scripts/setup.sh into the cache) for the
// end-to-end tests, and a small REST client that registers instances in it as Eureka clients do.
// A JVM takes 10-40 s to start here, so one server serves the whole e2e run: the first test file
// that asks starts it and writes where it listens into a folder named by this process; later
// files (jest runs them in band, in this same process) find it there. It dies with this process
// (setpriv --pdeathsig), and a reaper removes the folder.
import { accessSync, constants, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cacheDir } from '../../devenv/cache.js';
import { startReaper, startServer, type ServerProcess } from '../../devenv/processes.js';

export interface EurekaServer {
  /** The service URL, as clients' defaultZone: http://127.0.0.1:PORT/eureka/ */
  readonly url: string;
  readonly port: number;
  readonly logFile: string;
  /** How long this server took to answer /eureka/apps after its start (0 when it was already running). */
  readonly startedInMs: number;
  /** Stops it; the next sharedEurekaServer() starts another. */
  stop(): Promise<void>;
}

export function eurekaJar(): string {
  const path = join(cacheDir(), 'eureka', 'eureka-server.jar');
  try {
    accessSync(path, constants.R_OK);
  } catch {
    throw new Error(`the test Eureka server is not built: expected ${path}. Run 'npm run setup' (it builds it with Maven from test-e2e/servers/eureka).`);
  }
  return path;
}

interface Shared {
  pid: number;
  port: number;
  logFile: string;
}

const stateDir = () => join(tmpdir(), `flb-e2e-eureka-${process.pid}`);

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** GET path with Accept: application/json; status and body. */
export function getJson(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers: { accept: 'application/json' }, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('no answer within 5 s')));
    req.on('error', reject);
    req.end();
  });
}

const handle = (shared: Shared, startedInMs: number, owned?: ServerProcess): EurekaServer => ({
  url: `http://127.0.0.1:${shared.port}/eureka/`,
  port: shared.port,
  logFile: shared.logFile,
  startedInMs,
  async stop() {
    if (owned) await owned.stop(10_000);
    else if (alive(shared.pid)) {
      process.kill(shared.pid, 'SIGTERM');
      const deadline = Date.now() + 10_000;
      while (alive(shared.pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      if (alive(shared.pid)) process.kill(shared.pid, 'SIGKILL');
    }
    try {
      writeFileSync(join(stateDir(), 'server.json'), '{}');
    } catch {
      // The folder went with the run.
    }
  },
});

/** The run's Eureka server, started on first use. */
export async function sharedEurekaServer(readyTimeoutMs = 120_000): Promise<EurekaServer> {
  const dir = stateDir();
  const stateFile = join(dir, 'server.json');
  if (existsSync(stateFile)) {
    const shared = JSON.parse(readFileSync(stateFile, 'utf8')) as Partial<Shared>;
    if (shared.pid && shared.port && shared.logFile && alive(shared.pid)) {
      const answer = await getJson(`http://127.0.0.1:${shared.port}/eureka/apps`).catch(() => undefined);
      if (answer?.status === 200) return handle(shared as Shared, 0);
    }
  }
  const jar = eurekaJar();
  if (!existsSync(dir)) {
    mkdirSync(dir, { recursive: true });
    startReaper(dir);
  }
  const port = await freePort();
  const logFile = join(dir, `eureka-${port}.log`);
  const started = Date.now();
  // C1 only and the serial collector: the server starts in about two thirds of the time on 2 busy cores.
  const server = startServer('eureka', 'java', ['-XX:TieredStopAtLevel=1', '-XX:+UseSerialGC', '-jar', jar, `--server.port=${port}`], logFile);
  writeFileSync(join(dir, 'pids'), `${server.pid}\n`, { flag: 'a' });
  const deadline = started + readyTimeoutMs;
  for (;;) {
    if (!server.isRunning()) throw new Error(`the Eureka server exited before it answered (${await server.exited}); log ${logFile}:\n${server.logTail()}`);
    const answer = await getJson(`http://127.0.0.1:${port}/eureka/apps`).catch(() => undefined);
    if (answer?.status === 200) break;
    if (Date.now() > deadline) {
      await server.stop();
      throw new Error(`the Eureka server did not answer within ${readyTimeoutMs / 1000} s; log ${logFile}:\n${server.logTail()}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  const shared: Shared = { pid: server.pid, port, logFile };
  writeFileSync(stateFile, JSON.stringify(shared));
  return handle(shared, Date.now() - started, server);
}

export interface InstanceSpec {
  app: string;
  instanceId: string;
  ipAddr: string;
  port: number;
  status?: 'UP' | 'DOWN' | 'STARTING' | 'OUT_OF_SERVICE';
  zone?: string;
}

/**
 * Registers and renews instances over Eureka's REST API, with the body a Spring Cloud client
 * sends (InstanceInfo as JSON); a status change is a new registration, as such a client makes.
 */
export class EurekaRestClient {
  private readonly renewing = new Map<string, InstanceSpec>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    readonly serviceUrl: string,
    /** Lease duration given to the server, renewed at a third of it. */
    private readonly leaseSeconds = 30,
  ) {
    this.timer = setInterval(() => void this.renewAll(), (leaseSeconds * 1000) / 3);
  }

  async register(instance: InstanceSpec): Promise<void> {
    const { app, instanceId, ipAddr, port } = instance;
    const body = {
      instance: {
        instanceId,
        hostName: ipAddr,
        app: app.toUpperCase(),
        ipAddr,
        status: instance.status ?? 'UP',
        overriddenStatus: 'UNKNOWN',
        port: { $: port, '@enabled': 'true' },
        securePort: { $: 443, '@enabled': 'false' },
        countryId: 1,
        dataCenterInfo: { '@class': 'com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo', name: 'MyOwn' },
        leaseInfo: { renewalIntervalInSecs: Math.max(1, Math.floor(this.leaseSeconds / 3)), durationInSecs: this.leaseSeconds },
        metadata: instance.zone ? { zone: instance.zone } : {},
        homePageUrl: `http://${ipAddr}:${port}/`,
        statusPageUrl: `http://${ipAddr}:${port}/actuator/info`,
        healthCheckUrl: `http://${ipAddr}:${port}/actuator/health`,
        vipAddress: app.toLowerCase(),
        secureVipAddress: app.toLowerCase(),
        isCoordinatingDiscoveryServer: 'false',
        lastDirtyTimestamp: String(Date.now()),
      },
    };
    await this.send('POST', `apps/${app.toUpperCase()}`, JSON.stringify(body), 204);
    this.renewing.set(`${app.toUpperCase()}/${instanceId}`, instance);
  }

  async cancel(app: string, instanceId: string): Promise<void> {
    this.renewing.delete(`${app.toUpperCase()}/${instanceId}`);
    await this.send('DELETE', `apps/${app.toUpperCase()}/${instanceId}`, undefined, 200);
  }

  close(): void {
    clearInterval(this.timer);
  }

  private async renewAll(): Promise<void> {
    for (const [key] of this.renewing) {
      await this.send('PUT', `apps/${key}`, undefined, 200).catch(() => undefined);
    }
  }

  private send(method: string, path: string, body: string | undefined, expected: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const req = request(
        new URL(path, this.serviceUrl),
        { method, headers: { 'content-type': 'application/json', accept: 'application/json' }, timeout: 5000 },
        (res) => {
          res.resume();
          res.on('end', () => (res.statusCode === expected ? resolve() : reject(new Error(`${method} ${path}: ${res.statusCode}, expected ${expected}`))));
        },
      );
      req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer within 5 s`)));
      req.on('error', reject);
      req.end(body);
    });
  }
}
