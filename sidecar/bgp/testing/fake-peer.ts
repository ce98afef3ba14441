// A BGP peer for the session tests, written with the codec: it listens on loopback, records every
// message the speaker sends, and sends what a test tells it to.
import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import {
  Afi,
  decodeMessage,
  encodeKeepalive,
  encodeOpen,
  endOfRib,
  Framer,
  prefixText,
  routesOf,
  type Capability,
  type ReceivedMessage,
  type ReceivedUpdate,
} from '../wire/index.js';

export interface FakePeerOptions {
  as: number;
  routerId?: string;
  holdTimeSeconds?: number;
  capabilities?: Capability[];
  /** Answer the speaker's OPEN and KEEPALIVE by itself (default). */
  autoEstablish?: boolean;
  /** Send keepalives every this many ms once established (default: a third of the hold time). */
  keepaliveMs?: number;
}

/** The UPDATEs that carry routes (End-of-RIB markers left out). */
export const routeUpdates = (received: ReceivedMessage[]) => received.filter((m): m is ReceivedUpdate => m.type === 'update' && endOfRib(m) === undefined);

/** The prefixes a router holds from the speaker after these messages, as text, sorted. */
export function ribOf(received: ReceivedMessage[]): string[] {
  const held = new Set<string>();
  for (const update of routeUpdates(received)) {
    const { announced, withdrawn } = routesOf(update);
    for (const p of withdrawn) held.delete(prefixText(p));
    for (const p of announced) held.add(prefixText(p));
  }
  return [...held].sort();
}

export const ROUTER_CAPABILITIES: Capability[] = [
  { kind: 'multiprotocol', afi: Afi.IPV4, safi: 1 },
  { kind: 'multiprotocol', afi: Afi.IPV6, safi: 1 },
  { kind: 'route-refresh' },
  { kind: 'four-octet-as', as: 0 },
];

export class FakePeer {
  readonly received: ReceivedMessage[] = [];
  connections = 0;
  socket: Socket | undefined;
  private readonly server: Server;
  private keepalives: NodeJS.Timeout | undefined;
  private wake: (() => void)[] = [];

  private constructor(private readonly options: FakePeerOptions) {
    this.server = createServer((socket) => this.accept(socket));
  }

  static async start(options: FakePeerOptions, port = 0): Promise<FakePeer> {
    const peer = new FakePeer(options);
    peer.server.listen(port, '127.0.0.1');
    await once(peer.server, 'listening');
    return peer;
  }

  /** Connects to a speaker's listener (passive peering) as the router would, from `localAddress`. */
  async dial(port: number, localAddress = '127.0.0.1'): Promise<Socket> {
    const socket = connect({ host: '127.0.0.1', port, localAddress });
    await once(socket, 'connect');
    this.accept(socket);
    return socket;
  }

  get port(): number {
    return (this.server.address() as { port: number }).port;
  }

  private accept(socket: Socket): void {
    this.connections++;
    this.socket?.destroy();
    this.socket = socket;
    const framer = new Framer();
    socket.on('error', () => undefined);
    socket.on('data', (chunk: Buffer) => {
      for (const frame of framer.push(chunk)) {
        const message = decodeMessage(frame, { fourOctetAs: true });
        this.received.push(message);
        if (this.options.autoEstablish !== false) this.answer(socket, message);
      }
      for (const wake of this.wake.splice(0)) wake();
    });
    socket.on('close', () => {
      if (this.socket === socket) clearInterval(this.keepalives);
      for (const wake of this.wake.splice(0)) wake();
    });
  }

  private answer(socket: Socket, message: ReceivedMessage): void {
    if (message.type === 'open') {
      const hold = this.options.holdTimeSeconds ?? 90;
      socket.write(this.open());
      socket.write(encodeKeepalive());
      clearInterval(this.keepalives);
      const every = this.options.keepaliveMs ?? (hold * 1000) / 3;
      if (hold > 0 && every > 0) this.keepalives = setInterval(() => socket.write(encodeKeepalive()), every);
    }
  }

  open(): Uint8Array {
    const capabilities = (this.options.capabilities ?? ROUTER_CAPABILITIES).map((c) => (c.kind === 'four-octet-as' ? { ...c, as: this.options.as } : c));
    return encodeOpen({
      myAs: this.options.as,
      holdTimeSeconds: this.options.holdTimeSeconds ?? 90,
      bgpId: this.options.routerId ?? '192.0.2.254',
      capabilities,
    });
  }

  send(bytes: Uint8Array): void {
    this.socket!.write(bytes);
  }

  /** Stops sending keepalives (to let the speaker's hold timer run out). */
  silence(): void {
    clearInterval(this.keepalives);
  }

  /** Waits until `check` holds over what was received (checked after every message and close). */
  async until<T>(what: string, check: (received: ReceivedMessage[]) => T | undefined, timeoutMs = 5000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = check(this.received);
      if (value !== undefined && value !== false) return value;
      if (Date.now() > deadline) throw new Error(`fake peer: no ${what} within ${timeoutMs} ms; received ${this.received.map((m) => m.type).join(', ')}`);
      await new Promise<void>((resolve) => {
        this.wake.push(resolve);
        setTimeout(resolve, 50);
      });
    }
  }

  async close(): Promise<void> {
    clearInterval(this.keepalives);
    this.socket?.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
