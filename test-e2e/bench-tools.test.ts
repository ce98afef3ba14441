import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { execa, type ResultPromise } from 'execa';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createNetns, deleteNetns, link, removeStaleNamespaces, requireRoot, requireTools, type Netns } from './harness/netns.js';

/**
 * The C tools of bench:ebpf, built here under AddressSanitizer and UndefinedBehaviorSanitizer:
 * connect-time (new connections one at a time) and redirect-listener (the minimal sidecar that
 * relays a REDIRECTed connection to its SO_ORIGINAL_DST). A pod namespace dials an endpoint
 * namespace across a veth pair; the endpoint server (bench/lib/tcp-endpoint.c, plain build) answers
 * once and closes on 9092 and echoes without closing on 9090. The pod's nat OUTPUT sends the VIP to
 * 15001 for every user but the proxy's.
 */
const lib = fileURLToPath(new URL('../bench/lib/', import.meta.url));
const SANITIZE = ['-O1', '-g', '-fsanitize=address,undefined', '-fno-omit-frame-pointer', '-fno-sanitize-recover=undefined', '-Wall', '-Wextra', '-Werror'];
const POD = '10.219.0.1';
const ENDPOINT = '10.219.0.2';
/** An address on the endpoint's side that drops every SYN sent to it. */
const SILENT = '10.219.0.9';
const VIP = '240.240.9.10';
const PROXY_UID = 1500;
const [ECHO, SOURCE, ONCE] = [9090, 9091, 9092];

interface ConnectTime {
  connections: number;
  rate: number;
  connectP50Us: number;
  cycleP50Us: number;
  errors: number;
  connectTimeouts: number;
  connectErrors: number;
  answerTimeouts: number;
  firstFailure: string;
}

let work: string;
let pod: Netns;
let endpointNs: Netns;
let endpoint: ResultPromise | undefined;
const bin = (name: string) => join(work, name);

/**
 * Starts a long-running tool in a namespace and resolves at its "ready" line; wrapped, because an
 * execa process is a thenable that would be awaited to its exit.
 */
async function started(ns: Netns, command: string[], uid?: number): Promise<{ child: ResultPromise }> {
  const asUser = uid !== undefined ? ['setpriv', `--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', '--'] : [];
  const child = execa('ip', ['netns', 'exec', ns.name, ...asUser, 'setpriv', '--pdeathsig', 'KILL', '--', ...command], { reject: false });
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
    void child.then((r) => reject(new Error(`${command[0]} exited before it was ready: ${r.stderr}`)));
  });
  return { child };
}

/** connect-time from the pod, with the wall-clock time it took. */
async function connectTime(host: string, port: number, args: string[]): Promise<{ result: ConnectTime; elapsedMs: number }> {
  const t = performance.now();
  const { stdout } = await pod.exec(bin('connect-time'), [host, String(port), ...args]);
  return { result: JSON.parse(stdout) as ConnectTime, elapsedMs: performance.now() - t };
}

beforeAll(async () => {
  requireRoot('the bench tools test');
  await requireTools(['gcc', 'ip', 'iptables', 'setpriv']);
  await removeStaleNamespaces();
  work = mkdtempSync(join(tmpdir(), 'flbt-bench-tools-'));
  chmodSync(work, 0o755);
  await Promise.all([
    execa('gcc', [...SANITIZE, '-o', bin('connect-time'), join(lib, 'connect-time.c')]),
    execa('gcc', [...SANITIZE, '-o', bin('redirect-listener'), join(lib, 'redirect-listener.c')]),
    execa('gcc', ['-O2', '-o', bin('tcp-endpoint'), join(lib, 'tcp-endpoint.c')]),
  ]);
  pod = await createNetns('bt-pod');
  endpointNs = await createNetns('bt-ep');
  await link(pod, [`${POD}/24`], endpointNs, [`${ENDPOINT}/24`]);
  await endpointNs.exec('ip', ['addr', 'add', `${VIP}/32`, 'dev', 'lo']);
  await pod.exec('ip', ['route', 'add', 'default', 'via', ENDPOINT]);
  await pod.exec('iptables', ['-A', 'OUTPUT', '-d', SILENT, '-j', 'DROP']);
  await pod.exec('iptables', [
    '-t',
    'nat',
    '-A',
    'OUTPUT',
    '-p',
    'tcp',
    '-d',
    VIP,
    '-m',
    'owner',
    '!',
    '--uid-owner',
    String(PROXY_UID),
    '-j',
    'REDIRECT',
    '--to-ports',
    '15001',
  ]);
  endpoint = (await started(endpointNs, [bin('tcp-endpoint'), String(ECHO), String(SOURCE), String(ONCE)])).child;
}, 60_000);

afterAll(async () => {
  endpoint?.kill('SIGKILL');
  await deleteNetns(pod);
  await deleteNetns(endpointNs);
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('connect-time', () => {
  it('times connections to a server that answers and closes, and fails none', async () => {
    const { result } = await connectTime(ENDPOINT, ONCE, ['0.3', '0.1']);
    expect(result.errors).toBe(0);
    expect(result.connections).toBeGreaterThan(50);
    expect(result.connectP50Us).toBeGreaterThan(0);
    expect(result.connectP50Us).toBeLessThan(result.cycleP50Us);
  });

  it('leaves no TIME_WAIT socket on the server, which closed first (the client resets)', async () => {
    await connectTime(ENDPOINT, ONCE, ['0.3', '0']);
    const { stdout } = await endpointNs.exec('ss', ['-Htan', 'state', 'time-wait']);
    expect(stdout.trim()).toBe('');
  });

  it('counts a connection that gets no end of stream as failed instead of waiting for it', async () => {
    // The echo port answers the ping but never closes: the old tool read on for ever.
    const { result, elapsedMs } = await connectTime(ENDPOINT, ECHO, ['0.3', '0', '100']);
    expect(result.connections).toBe(0);
    expect(result.answerTimeouts).toBeGreaterThan(0);
    expect(result.errors).toBe(result.answerTimeouts);
    expect(result.firstFailure).toMatch(/^answerTimeouts: /);
    expect(elapsedMs).toBeLessThan(3_000);
  });

  it('counts a SYN that is never answered as a connect timeout and goes on', async () => {
    // The old tool's connect() waited out every SYN retransmission (over two minutes).
    const { result, elapsedMs } = await connectTime(SILENT, ONCE, ['0.5', '0', '100']);
    expect(result.connections).toBe(0);
    expect(result.connectTimeouts).toBeGreaterThanOrEqual(3);
    expect(result.firstFailure).toBe('connectTimeouts: Connection timed out');
    expect(elapsedMs).toBeLessThan(3_000);
  });

  it('refuses arguments that are not numbers, saying which', async () => {
    const r = await pod.exec(bin('connect-time'), [ENDPOINT, 'ninety', '1'], { reject: false });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain("PORT must be a positive number, not 'ninety'");
  });
});

describe('redirect-listener', () => {
  it('relays each redirected connection to its original destination', async () => {
    // With nothing on 15001 the VIP is refused: the connections are redirected.
    const before = await connectTime(VIP, ONCE, ['0.1', '0', '200']);
    expect(before.result.connections).toBe(0);
    expect(before.result.firstFailure).toBe('connectErrors: Connection refused');

    const { child: listener } = await started(pod, [bin('redirect-listener'), '15001'], PROXY_UID);
    try {
      const { result } = await connectTime(VIP, ONCE, ['0.3', '0.1']);
      expect(result.errors).toBe(0);
      expect(result.connections).toBeGreaterThan(20);
    } finally {
      listener.kill('SIGTERM');
    }
    const { stderr } = await listener;
    // A sanitizer's report, or a failed SO_ORIGINAL_DST, would be here.
    expect(stderr).toBe('');
  });

  it('refuses a missing or malformed port, saying why', async () => {
    const missing = await pod.exec(bin('redirect-listener'), [], { reject: false });
    expect(missing.exitCode).toBe(2);
    expect(missing.stderr).toContain('usage: redirect-listener PORT');
    // atoi() made this port 0, a port of the kernel's choosing that nothing is redirected to.
    const malformed = await pod.exec(bin('redirect-listener'), ['15001x'], { reject: false });
    expect(malformed.exitCode).toBe(2);
    expect(malformed.stderr).toContain("PORT must be a whole number from 1 to 65535, not '15001x'");
  });
});
