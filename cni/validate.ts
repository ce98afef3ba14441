/*
 * The in-pod check for CNI mode, run as the pod's first init container: is outbound traffic
 * really redirected? (A pod that started before the CNI plugin was on its node has no rules, the
 * most common failure of mesh CNI plugins.) It needs no privilege: it listens on the outbound port
 * and dials an address that only the redirect can answer, with a token it expects back.
 */
import { randomBytes } from 'node:crypto';
import { connect, createServer } from 'node:net';
import ipaddr from 'ipaddr.js';
import type { Interception } from '../common/contract/index.js';
import { ActionableError } from '../common/errors.js';

const PROBE_PORT = 15999;

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
        reject(
          new ActionableError(
            `traffic interception is not in place in this pod: a connection to ${host}:${port} was not redirected to port ${settings.outboundPort} (${why})`,
            'the pod probably started before the flb-mesh CNI plugin was installed on its node: delete the pod so that it is recreated, and check that the flb-mesh CNI DaemonSet runs on the node',
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
