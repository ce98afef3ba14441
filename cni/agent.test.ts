/*
 * The node agent's socket reader, as the plugin (plugin/flb-cni.c) and anything else that can
 * reach the socket talk to it: a request is 7 length-prefixed fields; the answer is
 * <exit code><length><stdout>.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../common/log.js';
import { CniAgent, REQUEST_LIMITS, RequestReader, type CniRequest } from './agent.js';

const TIMEOUT_MS = 400;
let work: string;
let agent: CniAgent;
let socketPath: string;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'flb-cni-agent-'));
  socketPath = join(work, 'agent.sock');
  agent = new CniAgent({
    socketPath,
    stateDir: join(work, 'state'),
    getPod: async () => undefined,
    log: createLogger('cni-agent-test', 'silent'),
    requestTimeoutMs: TIMEOUT_MS,
  });
  await agent.start();
});
afterAll(async () => {
  await agent.stop();
  rmSync(work, { recursive: true, force: true });
});

const field = (value: string | Buffer) => {
  const bytes = typeof value === 'string' ? Buffer.from(value) : value;
  const header = Buffer.alloc(4);
  header.writeUInt32BE(bytes.length);
  return Buffer.concat([header, bytes]);
};
const request = (r: Partial<CniRequest>) =>
  Buffer.concat([r.command ?? 'VERSION', r.containerId ?? '', r.netns ?? '', r.ifName ?? '', r.args ?? '', r.path ?? '', r.stdin ?? '{}'].map(field));

interface Answer {
  exitCode: number;
  result: { code?: number; msg?: string; cniVersion?: string };
  /** When the answer (or the close) came, from the connection. */
  afterMs: number;
}

/** Connects, lets `talk` write, and resolves with the agent's answer (or its closing without one). */
function exchange(talk: (socket: Socket) => void): Promise<Answer | { closedAfterMs: number }> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const socket = connect(socketPath);
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', reject);
    socket.on('close', () => {
      const answer = Buffer.concat(chunks);
      const afterMs = performance.now() - started;
      if (answer.length < 8) return resolve({ closedAfterMs: afterMs });
      resolve({ exitCode: answer.readUInt32BE(0), result: JSON.parse(answer.subarray(8, 8 + answer.readUInt32BE(4)).toString()) as Answer['result'], afterMs });
    });
    socket.on('connect', () => talk(socket));
  });
}

describe('the CNI agent socket', () => {
  it('answers a whole request however it is split', async () => {
    const answer = await exchange((socket) => {
      const bytes = request({ command: 'VERSION' });
      let i = 0;
      const next = () => {
        if (i >= bytes.length) return;
        socket.write(bytes.subarray(i, i + 3));
        i += 3;
        setTimeout(next, 1);
      };
      next();
    });
    expect(answer).toMatchObject({ exitCode: 0, result: { cniVersion: '1.1.0' } });
  });

  it('refuses a stdin field larger than 4 MiB as soon as its length arrives, without waiting for its bytes', async () => {
    const answer = await exchange((socket) => {
      const header = Buffer.alloc(4);
      header.writeUInt32BE(REQUEST_LIMITS.stdinBytes + 1);
      socket.write(Buffer.concat([request({ command: 'ADD' }).subarray(0, -6), header]));
    });
    expect(answer).toMatchObject({
      exitCode: 1,
      result: { code: 7, msg: `the network configuration on stdin is ${REQUEST_LIMITS.stdinBytes + 1} bytes, more than ${REQUEST_LIMITS.stdinBytes}` },
    });
    expect((answer as Answer).afterMs).toBeLessThan(TIMEOUT_MS);
  });

  it('refuses an environment value over 64 KiB, naming it', async () => {
    const answer = await exchange((socket) => socket.end(request({ command: 'ADD', args: 'K8S_POD_NAME='.padEnd(70_000, 'x') })));
    expect(answer).toMatchObject({ exitCode: 1, result: { code: 4, msg: `CNI_ARGS is 70000 bytes, more than ${REQUEST_LIMITS.environmentFieldBytes}` } });
  });

  it('answers a silent client with an error after the timeout, and serves others meanwhile', async () => {
    const silent = exchange(() => {});
    const trickling = exchange((socket) => {
      // A byte at a time, never finishing within the deadline: an overall deadline, not an idle one.
      const bytes = request({ command: 'VERSION' });
      let i = 0;
      const timer = setInterval(() => (i < bytes.length && socket.writable ? socket.write(bytes.subarray(i, ++i)) : clearInterval(timer)), 50);
      socket.on('close', () => clearInterval(timer));
    });
    const others = await Promise.all(Array.from({ length: 5 }, () => exchange((socket) => socket.write(request({ command: 'VERSION' })))));
    for (const other of others) expect(other).toMatchObject({ exitCode: 0, result: { cniVersion: '1.1.0' } });
    expect(Math.max(...others.map((o) => (o as Answer).afterMs))).toBeLessThan(TIMEOUT_MS);
    for (const slow of await Promise.all([silent, trickling])) {
      expect(slow).toMatchObject({ exitCode: 1, result: { code: 5, msg: `the request did not arrive whole within ${TIMEOUT_MS} ms` } });
      expect((slow as Answer).afterMs).toBeGreaterThanOrEqual(TIMEOUT_MS - 5);
      expect((slow as Answer).afterMs).toBeLessThan(TIMEOUT_MS + 1500);
    }
  });
});

describe('RequestReader', () => {
  it('reads a 4 MiB request in the pieces a socket delivers (headers split across them) in linear time', () => {
    const stdin = `{"cniVersion":"1.0.0","pad":"${'x'.repeat(REQUEST_LIMITS.stdinBytes - 40)}"}`;
    const bytes = request({ command: 'ADD', containerId: 'c1', netns: '/var/run/netns/x', ifName: 'eth0', args: 'A=1', path: '/opt/cni/bin', stdin });
    const reader = new RequestReader();
    const started = performance.now();
    let outcome;
    // 64 KiB pieces as a socket delivers them, each header split across two.
    for (let i = 0; i < bytes.length; i += 65_535) outcome = reader.push(bytes.subarray(i, i + 65_535));
    expect(performance.now() - started).toBeLessThan(1000);
    expect(outcome).toEqual({
      request: { command: 'ADD', containerId: 'c1', netns: '/var/run/netns/x', ifName: 'eth0', args: 'A=1', path: '/opt/cni/bin', stdin },
    });
  });

  it('refuses more than the whole-request limit', () => {
    const reader = new RequestReader();
    expect(reader.push(Buffer.alloc(REQUEST_LIMITS.totalBytes + 1))).toMatchObject({ code: 7, refused: expect.stringMatching(/the request is larger than/) });
  });
});

describe('the agent socket', () => {
  it('replaces a socket file no agent serves (one killed before removing it), and answers on it', async () => {
    const path = join(work, 'stale.sock');
    writeFileSync(path, '');
    const restarted = new CniAgent({ socketPath: path, stateDir: join(work, 'stale-state'), getPod: async () => undefined, log: createLogger('t', 'silent') });
    await restarted.start();
    try {
      const answer = await new Promise<string>((resolve, reject) => {
        const socket = connect(path);
        let text = '';
        socket.on('data', (d: Buffer) => (text += d.toString()));
        socket.on('end', () => resolve(text));
        socket.on('error', reject);
        socket.end(request({ command: 'VERSION' }));
      });
      expect(answer).toContain('"supportedVersions"');
    } finally {
      await restarted.stop();
    }
  });

  it('leaves the socket of an agent that serves it alone, and says so', async () => {
    const second = new CniAgent({ socketPath, stateDir: join(work, 'second-state'), getPod: async () => undefined, log: createLogger('t', 'silent') });
    await expect(second.start()).rejects.toThrow(`the CNI agent cannot listen on ${socketPath}: another process is listening there`);
    expect(await exchange((socket) => socket.end(request({ command: 'VERSION' })))).toMatchObject({ exitCode: 0, result: { cniVersion: '1.1.0' } });
  });
});
