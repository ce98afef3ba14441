import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { execa } from 'execa';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PodNetwork, type PodSandbox } from './pod-network.js';

const macOf = async (device: string, netns?: string) =>
  (JSON.parse((await execa('ip', [...(netns ? ['-n', netns] : []), '-j', 'link', 'show', 'dev', device])).stdout) as { address: string }[])[0]!.address;

describe('the pod network', () => {
  let dir: string;
  let network: PodNetwork;
  beforeAll(async () => {
    if (process.getuid?.() !== 0) throw new Error('the pod network needs root (network namespaces, a bridge): run the tests as root');
    dir = mkdtempSync(join(tmpdir(), 'flb-pod-network-test-'));
    network = await PodNetwork.create({ dir });
  });
  afterAll(async () => {
    await network?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("keeps the gateway's MAC while pods come and go, so a pod's frames to the host are never taken for another host's", async () => {
    const gatewayMac = await macOf(network.bridge);
    const pods: { sandbox: PodSandbox; pod: { uid: string; namespace: string; name: string } }[] = [];
    for (let i = 0; i < 6; i++) {
      const pod = { uid: `uid-${i}`, namespace: 'test', name: `pod-${i}` };
      pods.push({ sandbox: await network.addPod(pod), pod });
    }
    // The host ports' MACs are random: a bridge left to itself takes the lowest of them.
    const hostPortMacs = JSON.parse((await execa('ip', ['-j', 'link', 'show', 'master', network.bridge])).stdout) as { address: string }[];
    expect(hostPortMacs).toHaveLength(6);
    expect(await macOf(network.bridge)).toBe(gatewayMac);
    for (const { sandbox, pod } of pods.splice(0, 3)) await network.removePod(sandbox, pod);
    expect(await macOf(network.bridge)).toBe(gatewayMac);

    // A pod that resolved the gateway before the others went reaches the host over that entry.
    const host = createServer((socket) => socket.on('error', () => {}).end('hello\n'));
    await new Promise<void>((resolve) => host.listen(0, network.gateway, resolve));
    try {
      const { sandbox } = pods[0]!;
      const port = (host.address() as AddressInfo).port;
      const answer = await execa('ip', ['netns', 'exec', sandbox.netns, 'bash', '-c', `exec 3<>/dev/tcp/${network.gateway}/${port}; head -1 <&3`], {
        timeout: 5000,
      });
      expect(answer.stdout).toBe('hello');
      expect((await execa('ip', ['-n', sandbox.netns, 'neigh', 'show', network.gateway])).stdout).toContain(gatewayMac);
    } finally {
      host.close();
    }
    for (const { sandbox: s, pod } of pods) await network.removePod(s, pod);
  });
});
