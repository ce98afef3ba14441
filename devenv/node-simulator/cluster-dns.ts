// A stand-in for the cluster's DNS (kube-dns / CoreDNS) on the pod network's gateway: a pod's
// resolv.conf names it, as a kubelet's names the cluster DNS Service. It answers what kube-dns
// answers for Services (`<svc>.<ns>.svc.<domain>` A/AAAA with the ClusterIP) and NXDOMAIN for
// everything else (this environment has no outside network to recurse to). Without it, every name
// a resolver tries along the search list and nobody answers costs a timeout.
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer, type Server, type Socket } from 'node:net';
import { CoreV1Api, ListWatch, Watch, type KubeConfig, type V1Service } from '@kubernetes/client-node';
import dnsPacket, { type Packet } from 'dns-packet';
import type { Logger } from '../../common/log.js';

export class ClusterDns {
  private readonly names = new Map<string, string[]>();
  private informer?: ListWatch<V1Service>;
  private udp?: UdpSocket;
  private tcp?: Server;
  private readonly connections = new Set<Socket>();
  private stopped = false;

  constructor(private readonly options: { kubeConfig: KubeConfig; host: string; port?: number; domain: string; log: Logger }) {}

  async start(): Promise<boolean> {
    const core = this.options.kubeConfig.makeApiClient(CoreV1Api);
    const informer = new ListWatch<V1Service>('/api/v1/services', new Watch(this.options.kubeConfig), () => core.listServiceForAllNamespaces(), false);
    const update = (svc: V1Service, gone = false) => {
      const name = `${svc.metadata?.name}.${svc.metadata?.namespace}.svc.${this.options.domain}`;
      const ips = (svc.spec?.clusterIPs ?? []).filter((ip) => ip !== 'None');
      if (gone || ips.length === 0) this.names.delete(name);
      else this.names.set(name, ips);
    };
    informer.on('add', (s) => update(s));
    informer.on('update', (s) => update(s));
    informer.on('delete', (s) => update(s, true));
    informer.on('error', () => {
      if (!this.stopped) setTimeout(() => void (this.stopped ? undefined : informer.start().catch(() => undefined)), 1000).unref();
    });
    this.informer = informer;
    await informer.start();
    const port = this.options.port ?? 53;
    try {
      this.udp = createSocket('udp4');
      this.udp.on('message', (msg, peer) => {
        const answer = this.answer(msg);
        if (answer) this.udp?.send(answer, peer.port, peer.address);
      });
      await new Promise<void>((resolve, reject) => {
        this.udp!.once('error', reject);
        this.udp!.bind(port, this.options.host, () => resolve());
      });
      this.tcp = createServer((socket) => {
        this.connections.add(socket);
        socket.on('close', () => this.connections.delete(socket));
        let buffered = Buffer.alloc(0);
        socket.on('data', (chunk: Buffer) => {
          buffered = Buffer.concat([buffered, chunk]);
          // A frame is at most 64 KiB + 2; more buffered than that is not a DNS client.
          if (buffered.length > 65_538 * 2) return socket.destroy();
          while (buffered.length >= 2 && buffered.length >= 2 + buffered.readUInt16BE(0)) {
            const answer = this.answer(buffered.subarray(2, 2 + buffered.readUInt16BE(0)));
            buffered = buffered.subarray(2 + buffered.readUInt16BE(0));
            if (answer) socket.write(Buffer.concat([Buffer.from([answer.length >> 8, answer.length & 0xff]), answer]));
          }
        });
        socket.on('error', () => socket.destroy());
      });
      await new Promise<void>((resolve, reject) => {
        this.tcp!.once('error', reject);
        this.tcp!.listen(port, this.options.host, () => resolve());
      });
      return true;
    } catch (error) {
      this.options.log.warn(
        { err: (error as Error).message, address: `${this.options.host}:${port}` },
        'cannot serve cluster DNS there; names nobody else answers will time out in pods',
      );
      await this.stop();
      return false;
    }
  }

  private answer(msg: Buffer): Buffer | undefined {
    let query: Packet;
    try {
      query = dnsPacket.decode(msg);
    } catch {
      return undefined;
    }
    const question = query.questions?.[0];
    if (!question || query.type !== 'query') return undefined;
    const name = question.name.toLowerCase().replace(/\.$/, '');
    const ips = this.names.get(name);
    const family = question.type === 'A' ? 4 : question.type === 'AAAA' ? 6 : 0;
    const answers = (ips ?? []).filter((ip) => (family === 4 ? !ip.includes(':') : family === 6 ? ip.includes(':') : false));
    return dnsPacket.encode({
      type: 'response',
      id: query.id,
      // A name we do not have is NXDOMAIN (rcode 3, the flags' low bits); a Service without the asked family, NODATA.
      flags: dnsPacket.AUTHORITATIVE_ANSWER | dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | (ips ? 0 : 3),
      questions: [question],
      answers: answers.map((ip) => ({ type: family === 4 ? 'A' : 'AAAA', name: question.name, ttl: 5, data: ip, class: 'IN' })),
    } as Packet);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.informer?.stop();
    for (const socket of this.connections) socket.destroy();
    this.udp?.close();
    this.udp = undefined;
    await new Promise<void>((resolve) => (this.tcp ? this.tcp.close(() => resolve()) : resolve()));
    this.tcp = undefined;
  }
}
