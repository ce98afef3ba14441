/*
 * The in-pod check for CNI and eBPF mode, run as the pod's first init container: is outbound
 * traffic really redirected? (A pod that started before the CNI plugin was on its node has no
 * rules, the most common failure of mesh CNI plugins; an eBPF pod on a node whose feature check
 * failed is not registered.) It needs no privilege: it listens on the outbound port and dials an
 * address that only the redirect (iptables or eBPF) can answer, with a token it expects back.
 */
import { randomBytes } from 'node:crypto';
import { connect, createServer } from 'node:net';
import { readFile } from 'node:fs/promises';
import ipaddr from 'ipaddr.js';
import type { Interception } from '../common/contract/index.js';
import { ActionableError } from '../common/errors.js';
import { run } from './netns-run.js';

const PROBE_PORT = 15999;

/**
 * How lo's alias (IFLA_IFALIAS) starts when the node agent marked an eBPF pod on a node that cannot
 * run eBPF (cni/ebpf.ts writes it, with the node and what it lacks). The alias is the one thing the
 * agent can leave in a sandbox's namespace that an unprivileged container reads later, without a
 * volume or the API.
 */
export const EBPF_UNAVAILABLE_MARK = 'flb-mesh: eBPF interception is not available on node ';

export function probeDestination(settings: Interception): { host: string; port: number } {
  let host = '240.240.255.254';
  const included = settings.includeOutboundIpRanges.find((c) => !c.includes(':'));
  if (included) {
    // Inside the first IPv4 range the pod captures: its network address + 1.
    const [network] = ipaddr.parseCIDR(included);
    const bytes = (network as ipaddr.IPv4).toByteArray();
    bytes[3] = (bytes[3]! | 1) & 0xff;
    host = bytes.join('.');
  }
  let port = PROBE_PORT;
  while (settings.excludeOutboundPorts.includes(port)) port++;
  return { host, port };
}

export async function validateInterception(settings: Interception, timeoutMs = 2000): Promise<{ destination: string; ms: number }> {
  const token = randomBytes(16).toString('hex');
  const { host, port } = probeDestination(settings);
  const started = performance.now();
  let seen = false;
  const server = createServer((socket) => {
    socket.setEncoding('utf8');
    let got = '';
    socket.on('data', (d: string) => {
      got += d;
      if (got.includes(token)) {
        seen = true;
        socket.end(token);
      }
    });
    socket.on('error', () => socket.destroy());
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error) =>
      reject(
        new ActionableError(
          `cannot listen on the outbound port ${settings.outboundPort}: ${error.message}`,
          'the validation must run before the sidecar starts, as the first init container',
        ),
      ),
    );
    server.listen(settings.outboundPort, '0.0.0.0', resolve);
  });
  try {
    await new Promise<void>((resolve, reject) => {
      const socket = connect({ host, port, timeout: timeoutMs });
      let answer = '';
      socket.setEncoding('utf8');
      socket.on('connect', () => socket.write(token));
      socket.on('data', (d: string) => {
        answer += d;
        if (answer.includes(token)) {
          socket.destroy();
          resolve();
        }
      });
      const fail = (why: string) => {
        socket.destroy();
        const notRedirected = `traffic interception is not in place in this pod: a connection to ${host}:${port} was not redirected to port ${settings.outboundPort} (${why})`;
        void (settings.mode === 'ebpf' ? ebpfUnavailableMark() : Promise.resolve(undefined)).then((mark) =>
          reject(
            mark
              ? new ActionableError(
                  `${notRedirected}: ${mark.replace(/^flb-mesh: /, '')}`,
                  'this node cannot run eBPF interception: set the mesh interception.mode to "cni" (or "iptables"), or give the node what it lacks and restart the flb-mesh CNI agent there, then delete the pod',
                )
              : new ActionableError(
                  notRedirected,
                  'the pod probably started before the flb-mesh CNI plugin was installed on its node: delete the pod so that it is recreated, and check that the flb-mesh CNI DaemonSet runs on the node',
                ),
          ),
        );
      };
      socket.on('timeout', () => fail(`no answer within ${timeoutMs} ms`));
      socket.on('error', (error) => fail(error.message));
      socket.on('close', () => !seen && fail('closed'));
    });
  } finally {
    server.close();
  }
  return { destination: `${host}:${port}`, ms: performance.now() - started };
}

/**
 * What the node agent left on lo when this eBPF pod's node cannot run eBPF (cni/ebpf.ts). Read
 * with `ip`, which asks the kernel for this namespace's lo; /sys is the fallback, since a /sys
 * mounted in another namespace would show that namespace's lo.
 */
async function ebpfUnavailableMark(): Promise<string | undefined> {
  let alias: string | undefined;
  try {
    const links = JSON.parse(await run('ip', ['-j', 'link', 'show', 'dev', 'lo'], {})) as { ifalias?: string }[];
    alias = links[0]?.ifalias;
  } catch {
    alias = await readFile('/sys/class/net/lo/ifalias', 'utf8').catch(() => undefined);
  }
  alias = alias?.trim();
  return alias?.startsWith(EBPF_UNAVAILABLE_MARK) ? alias : undefined;
}
