/*
 * The CNI node agent: the plugin on the host (cni/plugin/flb-cni.c) forwards each CNI call here
 * over a Unix socket; the agent decides and programs the pod's network namespace with the one
 * rule builder. CNI spec 1.0.0 (ADD, DEL, CHECK, VERSION) and 1.1.0 (STATUS, GC).
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, unlinkSync, writeFileSync, renameSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import type { V1Pod } from '@kubernetes/client-node';
import { INTERCEPTION_ANNOTATION, InterceptionSchema, SIDECAR_STATUS_ANNOTATION, checkDocument, type Interception } from '../common/contract/index.js';
import { listenError, portInUse } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { EbpfNode } from './ebpf.js';
import { applyInterception, cleanInterception, verifyRules } from './iptables.js';
import type { CniAgentMetrics } from './metrics.js';

export const SUPPORTED_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'];

/** CNI error codes (spec, "Error"); 100+ are this plugin's own. */
export const CniError = {
  incompatibleVersion: 1,
  unsupportedField: 2,
  unknownContainer: 3,
  invalidEnvironment: 4,
  io: 5,
  decode: 6,
  invalidConfig: 7,
  tryAgainLater: 11,
  programming: 100,
} as const;

export interface CniRequest {
  command: string;
  containerId: string;
  netns: string;
  ifName: string;
  args: string;
  path: string;
  stdin: string;
}

export interface CniReply {
  exitCode: number;
  stdout: string;
}

/**
 * What one request from the plugin may be. The plugin sends at most 4 MiB of stdin (flb-cni.c's
 * MAX_STDIN); environment values are short. A client that has not sent a whole request within
 * timeoutMs is answered with an error and dropped: a stuck or hostile client must cost one socket
 * for a while, not memory without bound or the agent's attention.
 */
export const REQUEST_LIMITS = {
  environmentFieldBytes: 64 * 1024,
  stdinBytes: 4 * 1024 * 1024,
  totalBytes: 5 * 1024 * 1024,
  timeoutMs: 10_000,
} as const;

export interface AgentOptions {
  socketPath: string;
  /** Records which container's namespace was programmed, for DEL and GC. */
  stateDir: string;
  /** The pod behind a sandbox; undefined when it does not exist (yet). */
  getPod(namespace: string, name: string): Promise<V1Pod | undefined>;
  log: Logger;
  /** REQUEST_LIMITS.timeoutMs unless told (tests). */
  requestTimeoutMs?: number;
  metrics?: CniAgentMetrics;
  /** eBPF mode's node side; without it an eBPF pod's ADD fails (programming). */
  ebpf?: EbpfNode;
}

/** What ADD did to a sandbox's namespace, kept in the state dir for DEL and GC. */
interface RecordedAttachment {
  netns: string;
  /** The BGP VIPs put on its lo. */
  vips?: string[];
  /** eBPF mode: the namespace's cookie in the eBPF maps, to unregister it even once the namespace is gone. */
  ebpfCookie?: string;
}

class CniFailure extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly details?: string,
  ) {
    super(message);
  }
}

function parseArgs(args: string): Record<string, string> {
  return Object.fromEntries(
    args
      .split(';')
      .filter(Boolean)
      .map((pair) => {
        const eq = pair.indexOf('=');
        return eq < 0 ? [pair, ''] : [pair.slice(0, eq), pair.slice(eq + 1)];
      }),
  );
}

/** The interception settings of a pod that has a sidecar and is set up by the node agent (cni and ebpf mode); undefined otherwise. */
export function cniSettingsOf(pod: V1Pod): Interception | undefined {
  const annotations = pod.metadata?.annotations ?? {};
  if (annotations[SIDECAR_STATUS_ANNOTATION] === undefined || annotations[INTERCEPTION_ANNOTATION] === undefined) return undefined;
  let data: unknown;
  try {
    data = JSON.parse(annotations[INTERCEPTION_ANNOTATION]);
  } catch {
    throw new CniFailure(CniError.invalidConfig, `pod annotation ${INTERCEPTION_ANNOTATION} is not JSON`);
  }
  const checked = checkDocument(InterceptionSchema, data);
  if (!checked.ok)
    throw new CniFailure(
      CniError.invalidConfig,
      `pod annotation ${INTERCEPTION_ANNOTATION} is invalid: ${checked.issues.map((i) => `${i.field}: ${i.message}`).join('; ')}`,
    );
  return checked.value.mode === 'iptables' ? undefined : checked.value;
}

export class CniAgent {
  private server?: Server;
  constructor(private readonly options: AgentOptions) {}

  async start(): Promise<void> {
    const listener = { what: 'the CNI agent', address: this.options.socketPath, flag: '--socket PATH (the plugin finds it through FLB_CNI_AGENT_SOCKET)' };
    mkdirSync(dirname(this.options.socketPath), { recursive: true });
    mkdirSync(this.options.stateDir, { recursive: true });
    try {
      this.options.ebpf?.collectGarbage();
    } catch (error) {
      this.options.log.warn({ err: error }, 'could not remove the eBPF settings of namespaces that are gone; trying again at the next start');
    }
    if (existsSync(this.options.socketPath)) {
      // Removing the socket of an agent still serving would take the node's pods away from it.
      if (await answers(this.options.socketPath)) throw portInUse(listener);
      unlinkSync(this.options.socketPath); // left by an agent that stopped without removing it
    }
    this.server = createServer((socket) => this.serve(socket));
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', (error) => reject(listenError(error, listener)));
      this.server!.listen(this.options.socketPath, resolve);
    });
    this.options.log.info({ socket: this.options.socketPath }, 'CNI agent listening');
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    rmSync(this.options.socketPath, { force: true });
  }

  private serve(socket: Socket): void {
    const reader = new RequestReader();
    const answer = (reply: CniReply) => {
      socket.end(encodeReply(reply));
      // A client that never closes its side would keep the socket half-open for ever.
      setTimeout(() => socket.destroy(), 1000).unref();
    };
    const refuse = (code: number, message: string) => {
      socket.removeAllListeners('data');
      clearTimeout(deadline);
      this.options.log.warn({ code }, `CNI request refused: ${message}`);
      this.options.metrics?.refused();
      answer({ exitCode: 1, stdout: errorResult('1.0.0', code, message) });
    };
    const timeoutMs = this.options.requestTimeoutMs ?? REQUEST_LIMITS.timeoutMs;
    const deadline = setTimeout(() => refuse(CniError.io, `the request did not arrive whole within ${timeoutMs} ms`), timeoutMs);
    socket.on('data', (chunk: Buffer) => {
      const outcome = reader.push(chunk);
      if (!outcome) return;
      if ('refused' in outcome) {
        refuse(outcome.code, outcome.refused);
        return;
      }
      socket.removeAllListeners('data');
      clearTimeout(deadline);
      this.handle(outcome.request).then(answer, (error: unknown) =>
        answer({ exitCode: 1, stdout: errorResult('1.0.0', CniError.io, `agent error: ${String(error)}`) }),
      );
    });
    socket.on('error', () => {
      clearTimeout(deadline);
      socket.destroy();
    });
    socket.on('close', () => clearTimeout(deadline));
  }

  /** One CNI call; never throws: failures become CNI error results. */
  async handle(request: CniRequest): Promise<CniReply> {
    const started = performance.now();
    const reply = await this.answer(request);
    this.options.metrics?.answered(request.command, reply, started);
    return reply;
  }

  private async answer(request: CniRequest): Promise<CniReply> {
    let version = '1.0.0';
    const log = this.options.log.child({ command: request.command, container: request.containerId });
    try {
      if (request.command === 'VERSION') {
        return { exitCode: 0, stdout: JSON.stringify({ cniVersion: '1.1.0', supportedVersions: SUPPORTED_VERSIONS }) };
      }
      let config: { cniVersion?: unknown; prevResult?: unknown; name?: unknown; 'cni.dev/valid-attachments'?: unknown };
      try {
        config = JSON.parse(request.stdin) as typeof config;
      } catch (error) {
        throw new CniFailure(CniError.decode, `the network configuration on stdin is not JSON: ${(error as Error).message}`);
      }
      if (typeof config !== 'object' || config === null || typeof config.cniVersion !== 'string') {
        throw new CniFailure(CniError.invalidConfig, 'the network configuration has no cniVersion');
      }
      version = config.cniVersion;
      if (!SUPPORTED_VERSIONS.includes(version)) {
        throw new CniFailure(CniError.incompatibleVersion, `CNI version ${version} is not supported (supported: ${SUPPORTED_VERSIONS.join(', ')})`);
      }
      const passThrough = () => JSON.stringify({ ...(config.prevResult as object), cniVersion: version });
      switch (request.command) {
        case 'ADD': {
          if (typeof config.prevResult !== 'object' || config.prevResult === null) {
            throw new CniFailure(CniError.invalidConfig, 'flb-cni is a chained plugin: put it after the plugin that creates the interface (no prevResult)');
          }
          const settings = await this.podSettings(request);
          if (settings) {
            const outcome = await this.program(request, settings);
            log.info({ netns: request.netns, mode: settings.mode, ...(settings.bgpVips?.length ? { vips: settings.bgpVips } : {}) }, outcome);
          }
          return { exitCode: 0, stdout: passThrough() };
        }
        case 'DEL':
          await this.release(request.containerId, request.netns, log);
          return { exitCode: 0, stdout: '' };
        case 'CHECK': {
          const settings = await this.podSettings(request);
          if (settings) {
            const { problems } = await verifyRules(settings, { netns: request.netns });
            if (settings.mode === 'ebpf' && !this.options.ebpf?.isRegistered(request.netns))
              problems.unshift('the namespace is not registered with the eBPF programs');
            if (problems.length)
              throw new CniFailure(CniError.programming, `the pod's interception rules are not in place: ${problems.slice(0, 5).join('; ')}`);
          }
          return { exitCode: 0, stdout: '' };
        }
        case 'STATUS':
          return { exitCode: 0, stdout: '' };
        case 'GC': {
          const valid = Array.isArray(config['cni.dev/valid-attachments']) ? (config['cni.dev/valid-attachments'] as { containerID?: string }[]) : [];
          const keep = new Set(valid.map((a) => a.containerID));
          for (const id of this.recordedContainers()) if (!keep.has(id)) await this.release(id, undefined, log);
          return { exitCode: 0, stdout: '' };
        }
        default:
          throw new CniFailure(CniError.invalidEnvironment, `unknown CNI_COMMAND ${JSON.stringify(request.command)}`);
      }
    } catch (error) {
      const failure = error instanceof CniFailure ? error : new CniFailure(CniError.io, error instanceof Error ? error.message : String(error));
      log.warn({ code: failure.code }, failure.message);
      return { exitCode: 1, stdout: errorResult(version, failure.code, failure.message, failure.details) };
    }
  }

  private async podSettings(request: CniRequest): Promise<Interception | undefined> {
    const args = parseArgs(request.args);
    const namespace = args.K8S_POD_NAMESPACE;
    const name = args.K8S_POD_NAME;
    if (!namespace || !name) return undefined; // not a Kubernetes pod: nothing to do
    if (!request.netns) throw new CniFailure(CniError.invalidEnvironment, 'CNI_NETNS is not set');
    if (!existsSync(request.netns)) throw new CniFailure(CniError.invalidEnvironment, `the network namespace ${request.netns} does not exist`);
    let pod: V1Pod | undefined;
    try {
      pod = await this.options.getPod(namespace, name);
    } catch (error) {
      throw new CniFailure(CniError.tryAgainLater, `cannot read pod ${namespace}/${name} from the Kubernetes API: ${(error as Error).message}`);
    }
    if (!pod) throw new CniFailure(CniError.tryAgainLater, `pod ${namespace}/${name} is not known to the Kubernetes API (yet)`);
    return cniSettingsOf(pod);
  }

  /** ADD's work; what was done, for the log. */
  private async program(request: CniRequest, settings: Interception): Promise<string> {
    const ebpf = settings.mode === 'ebpf' ? this.options.ebpf : undefined;
    if (settings.mode === 'ebpf') {
      if (!ebpf) throw new CniFailure(CniError.programming, 'the pod is in eBPF mode, but this node agent was started without eBPF');
      const verdict = await ebpf.available();
      if (!verdict.ok) {
        // The pod starts and its validation fails, saying why: a failed ADD would only be retried
        // by the runtime for ever, its reason in the kubelet's log rather than the pod's.
        try {
          await ebpf.markUnavailable(request.netns, verdict.reason);
        } catch (error) {
          throw new CniFailure(
            CniError.programming,
            `eBPF interception is not available on this node (${verdict.reason}), and marking the pod failed: ${(error as Error).message}`,
          );
        }
        return 'eBPF interception is not available on this node: the pod is marked, its validation fails saying so';
      }
    }
    // Never programmed by this agent (no record survives from an earlier ADD, not registered): no
    // rule of ours can be in the namespace. Decided before this ADD's record is written.
    const fresh = ebpf !== undefined && this.recorded(request.containerId) === undefined && !ebpf.isRegistered(request.netns);
    // The VIPs are recorded, not read from the pod at DEL: by then the pod may be gone from the API.
    const record: RecordedAttachment = { netns: request.netns, ...(settings.bgpVips?.length ? { vips: settings.bgpVips } : {}) };
    this.record(request.containerId, record);
    let vipsAdded: string[] | undefined;
    try {
      // In eBPF mode the rules are the inbound ones only (cni/rules.ts): the programs take outbound and DNS.
      vipsAdded = (fresh ? await ebpf.applyInboundToFresh(settings, request.netns) : await applyInterception(settings, { netns: request.netns })).vipsAdded;
      // Registered after the VIPs are on lo: registration reads the namespace's own addresses, which the app reaches directly.
      if (ebpf) this.record(request.containerId, { ...record, ebpfCookie: await ebpf.register(request.netns, settings) });
    } catch (error) {
      // applyInterception leaves nothing half-applied; if registering failed, what it made goes too.
      if (vipsAdded) await cleanInterception(vipsAdded, { netns: request.netns }).catch(() => {});
      this.forget(request.containerId);
      throw new CniFailure(CniError.programming, `could not program the pod's network namespace: ${(error as Error).message}`);
    }
    return ebpf ? 'registered with the eBPF programs, inbound rule applied' : 'interception rules applied';
  }

  /** DEL: removes what ADD made (the eBPF registration, the rules, the VIPs on lo). Succeeds for something never added, or whose namespace is gone. */
  private async release(containerId: string, netns: string | undefined, log: Logger): Promise<void> {
    const recorded = this.recorded(containerId);
    if (recorded?.ebpfCookie !== undefined) {
      try {
        this.options.ebpf?.unregister(recorded.ebpfCookie);
      } catch (error) {
        // Left to the collection at the agent's next start, which finds the namespace gone.
        log.warn({ err: error, cookie: recorded.ebpfCookie }, 'could not unregister the namespace from the eBPF programs');
      }
    }
    const target = netns || recorded?.netns;
    if (recorded && target && existsSync(target)) {
      try {
        await cleanInterception(recorded.vips ?? [], { netns: target });
      } catch (error) {
        log.warn({ err: error }, 'could not clean the rules; the namespace is probably going away');
      }
    }
    this.forget(containerId);
  }

  private statePath(containerId: string): string {
    return join(this.options.stateDir, `${containerId.replace(/[^A-Za-z0-9_.-]/g, '_')}.json`);
  }

  private record(containerId: string, state: RecordedAttachment): void {
    const path = this.statePath(containerId);
    writeFileSync(`${path}.tmp`, JSON.stringify({ containerId, ...state }));
    renameSync(`${path}.tmp`, path);
  }

  private recorded(containerId: string): RecordedAttachment | undefined {
    try {
      return JSON.parse(readFileSync(this.statePath(containerId), 'utf8')) as RecordedAttachment;
    } catch {
      return undefined;
    }
  }

  private recordedContainers(): string[] {
    return readdirSync(this.options.stateDir)
      .filter((f) => f.endsWith('.json'))
      .map((f) => (JSON.parse(readFileSync(join(this.options.stateDir, f), 'utf8')) as { containerId: string }).containerId);
  }

  private forget(containerId: string): void {
    rmSync(this.statePath(containerId), { force: true });
  }
}

/** Whether something accepts connections on the Unix socket at `path`. */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(path);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

export function errorResult(cniVersion: string, code: number, msg: string, details?: string): string {
  return JSON.stringify({ cniVersion, code, msg, ...(details ? { details } : {}) });
}

const FIELDS = ['command', 'containerId', 'netns', 'ifName', 'args', 'path', 'stdin'] as const;
const ENVIRONMENT_NAMES = ['CNI_COMMAND', 'CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_ARGS', 'CNI_PATH'];

export type ReadOutcome = { request: CniRequest } | { refused: string; code: number } | undefined;

/**
 * The plugin's request (see flb-cni.c), 7 length-prefixed fields, read as it arrives: each
 * field's length is checked as soon as its 4 bytes are in (a field over its limit is refused
 * before its bytes come), and its bytes are copied once into a buffer of that length, so time
 * and memory stay linear in the request however it is split.
 */
export class RequestReader {
  private readonly fields: string[] = [];
  private readonly header = Buffer.alloc(4);
  private headerFilled = 0;
  private field: Buffer | undefined;
  private fieldFilled = 0;
  private received = 0;

  /** The request once whole; a refusal (then stop reading); undefined while incomplete. */
  push(chunk: Buffer): ReadOutcome {
    this.received += chunk.length;
    if (this.received > REQUEST_LIMITS.totalBytes)
      return { refused: `the request is larger than ${REQUEST_LIMITS.totalBytes} bytes`, code: CniError.invalidConfig };
    let offset = 0;
    for (;;) {
      if (!this.field) {
        const headerBytes = Math.min(4 - this.headerFilled, chunk.length - offset);
        chunk.copy(this.header, this.headerFilled, offset, offset + headerBytes);
        this.headerFilled += headerBytes;
        offset += headerBytes;
        if (this.headerFilled < 4) return undefined;
        this.headerFilled = 0;
        const length = this.header.readUInt32BE(0);
        const index = this.fields.length;
        const stdin = index === FIELDS.length - 1;
        const limit = stdin ? REQUEST_LIMITS.stdinBytes : REQUEST_LIMITS.environmentFieldBytes;
        if (length > limit) {
          return stdin
            ? { refused: `the network configuration on stdin is ${length} bytes, more than ${limit}`, code: CniError.invalidConfig }
            : { refused: `${ENVIRONMENT_NAMES[index]} is ${length} bytes, more than ${limit}`, code: CniError.invalidEnvironment };
        }
        this.field = Buffer.allocUnsafe(length);
        this.fieldFilled = 0;
      }
      const fieldBytes = Math.min(this.field.length - this.fieldFilled, chunk.length - offset);
      chunk.copy(this.field, this.fieldFilled, offset, offset + fieldBytes);
      this.fieldFilled += fieldBytes;
      offset += fieldBytes;
      if (this.fieldFilled < this.field.length) return undefined;
      this.fields.push(this.field.toString('utf8'));
      this.field = undefined;
      if (this.fields.length === FIELDS.length)
        return { request: Object.fromEntries(FIELDS.map((name, i) => [name, this.fields[i]!])) as unknown as CniRequest };
    }
  }
}

/** A whole request in one buffer (tests, tools); undefined when incomplete or refused. */
export function decodeRequest(buffer: Buffer): CniRequest | undefined {
  const outcome = new RequestReader().push(buffer);
  return outcome && 'request' in outcome ? outcome.request : undefined;
}

export function encodeReply(reply: CniReply): Buffer {
  const body = Buffer.from(reply.stdout.endsWith('\n') || reply.stdout === '' ? reply.stdout : `${reply.stdout}\n`);
  const header = Buffer.alloc(8);
  header.writeUInt32BE(reply.exitCode, 0);
  header.writeUInt32BE(body.length, 4);
  return Buffer.concat([header, body]);
}
