// Captures the messages real routers send (BIRD 2 and GoBGP from Debian) into
// sidecar/bgp/testing/captured/<router>/, for the codec's tests (wire/captured.test.ts) and the fuzz
// corpus. Each router runs in a network namespace of its own, joined by a veth pair to a second one
// where this script plays its eBGP peer (BIRD refuses loopback neighbours): OPEN, KEEPALIVE, the router's UPDATEs for a few static routes and End-of-RIB, a
// ROUTE-REFRESH the router is told to send, and the NOTIFICATION it answers a bad header with.
// Needs root, bird2 and gobgpd. Run again (from the repository root) only to change the captures,
// and commit the files it writes:
//   npx esbuild sidecar/bgp/testing/capture-routers.ts --bundle --platform=node --format=esm \
//     --packages=external --outfile=node_modules/.cache/capture-routers.mjs && node node_modules/.cache/capture-routers.mjs
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import {
  Afi,
  decodeMessage,
  encodeKeepalive,
  encodeOpen,
  encodeRouteRefresh,
  endOfRib,
  Framer,
  HEADER_LENGTH,
  type Frame,
  type ReceivedMessage,
} from '../wire/index.js';

const OUT = resolve('sidecar/bgp/testing/captured');
const OUR_AS = 65001;
const ROUTER_AS = 65000;

interface Router {
  name: string;
  start(dir: string, netns: string): ChildProcess;
  /** Once it listens: gives it the routes to send us. */
  addRoutes(netns: string): void;
  /** Makes the router end the session with a NOTIFICATION; returns the file name for it. */
  provokeNotification(socket: Socket, netns: string): string;
  /** Makes the router send a ROUTE-REFRESH to us, when it can be made to. */
  askForRefresh?(netns: string, dir: string): void;
}

const inNetns = (netns: string, command: string, args: string[]) => execFileSync('ip', ['netns', 'exec', netns, command, ...args], { encoding: 'utf8' });

const bird: Router = {
  // "BIRD version 2.0.12", on stderr
  name: `bird-${spawnSync('bird', ['--version'], { encoding: 'utf8' }).stderr.trim().split(' ').pop()}`,
  start(dir, netns) {
    writeFileSync(
      join(dir, 'bird.conf'),
      `router id 192.0.2.254;
protocol device {}
protocol static s4 { ipv4; route 203.0.113.0/24 blackhole; route 198.51.100.0/25 blackhole; }
protocol static s6 { ipv6; route 2001:db8:ff::/48 blackhole; }
protocol bgp peer {
  local 10.255.0.1 as ${ROUTER_AS};
  neighbor 10.255.0.2 as ${OUR_AS};
  passive on;
  ipv4 { import all; export filter { bgp_community.add((${ROUTER_AS},100)); bgp_med = 10; accept; }; };
  ipv6 { import all; next hop address 2001:db8::254; export filter { bgp_large_community.add((${ROUTER_AS},1,2)); accept; }; };
}
`,
    );
    return spawn('ip', ['netns', 'exec', netns, 'bird', '-f', '-c', join(dir, 'bird.conf'), '-s', join(dir, 'bird.ctl'), '-P', join(dir, 'bird.pid')], {
      stdio: 'inherit',
    });
  },
  addRoutes() {
    // static protocols in bird.conf
  },
  provokeNotification(socket) {
    // A message of no known type: Message Header Error / Bad Message Type.
    const bad = encodeKeepalive().slice();
    bad[18] = 9;
    socket.write(bad);
    return 'notification-bad-message-type';
  },
  askForRefresh(netns, dir) {
    inNetns(netns, 'birdc', ['-s', join(dir, 'bird.ctl'), 'reload', 'in', 'peer']);
  },
};

const gobgp: Router = {
  name: `gobgp-${execFileSync('gobgpd', ['--version'], { encoding: 'utf8' }).trim().split(' ').pop()}`,
  start(dir, netns) {
    writeFileSync(
      join(dir, 'gobgpd.toml'),
      `[global.config]
  as = ${ROUTER_AS}
  router-id = "192.0.2.253"
[[neighbors]]
  [neighbors.config]
    neighbor-address = "10.255.0.2"
    peer-as = ${OUR_AS}
  [neighbors.transport.config]
    local-address = "10.255.0.1"
    passive-mode = true
  # GoBGP sends End-of-RIB only with graceful restart on (as a helper here: it keeps nothing for us)
  [neighbors.graceful-restart.config]
    enabled = true
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
    [neighbors.afi-safis.mp-graceful-restart.config]
      enabled = true
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
    [neighbors.afi-safis.mp-graceful-restart.config]
      enabled = true
`,
    );
    return spawn('ip', ['netns', 'exec', netns, 'gobgpd', '-f', join(dir, 'gobgpd.toml'), '-l', 'warn'], { stdio: 'inherit' });
  },
  addRoutes(netns) {
    inNetns(netns, 'gobgp', ['global', 'rib', 'add', '-a', 'ipv4', '203.0.113.0/24', 'community', `${ROUTER_AS}:100`, 'med', '10']);
    inNetns(netns, 'gobgp', ['global', 'rib', 'add', '-a', 'ipv4', '198.51.100.0/25']);
    inNetns(netns, 'gobgp', ['global', 'rib', 'add', '-a', 'ipv6', '2001:db8:ff::/48', 'large-community', `${ROUTER_AS}:1:2`]);
  },
  provokeNotification(_socket, netns) {
    // Not a bad header: GoBGP 3.10 does not check the marker (it closes without a word) and dies on
    // an unknown message type (a nil pointer in fsmHandler.handlingError).
    inNetns(netns, 'gobgp', ['neighbor', '10.255.0.2', 'shutdown', '--reason', 'maintenance window']);
    return 'notification-cease-administrative-shutdown';
  },
  // No ROUTE-REFRESH: `gobgp neighbor ADDR softresetin` re-runs its policy over the routes it kept and sends none.
};

/** Messages as they arrive, whole (header included), with a way to wait for one. */
class Recorder {
  readonly messages: { wire: Uint8Array; message: ReceivedMessage }[] = [];
  private readonly framer = new Framer();
  private waiting: (() => void)[] = [];

  constructor(socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      for (const frame of this.framer.push(chunk)) {
        this.messages.push({ wire: whole(frame), message: decodeMessage(frame, { fourOctetAs: true, ibgp: false, peerAs: ROUTER_AS }) });
      }
      for (const wake of this.waiting.splice(0)) wake();
    });
  }

  async waitFor(what: string, found: (m: ReceivedMessage) => boolean, timeoutMs = 15_000): Promise<Uint8Array> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.messages.find((m) => found(m.message));
      if (hit) return hit.wire;
      if (Date.now() > deadline) throw new Error(`no ${what} within ${timeoutMs} ms (got ${this.messages.map((m) => m.message.type).join(', ')})`);
      await new Promise<void>((wake) => {
        this.waiting.push(wake);
        setTimeout(wake, 200);
      });
    }
  }
}

function whole(frame: Frame): Uint8Array {
  const out = new Uint8Array(HEADER_LENGTH + frame.body.length);
  out.fill(0xff, 0, 16);
  out[16] = out.length >> 8;
  out[17] = out.length & 0xff;
  out[18] = frame.type;
  out.set(frame.body, HEADER_LENGTH);
  return out;
}

/** The router listens once it has read its configuration. */
async function connectWithRetry(): Promise<Socket> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await new Promise<Socket>((done, fail) => {
        const socket = connect({ host: '10.255.0.1', port: 179, localAddress: '10.255.0.2' }, () => done(socket));
        socket.once('error', fail);
      });
    } catch (error) {
      if (attempt > 50) throw error;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

/** Runs inside the router's namespace (the script re-executes itself there). */
async function captureInside(router: Router, netns: string): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'flb-capture-'));
  const child = router.start(dir, netns);
  try {
    const socket = await connectWithRetry();
    router.addRoutes(netns);
    const recorder = new Recorder(socket);
    socket.write(
      encodeOpen({
        myAs: OUR_AS,
        holdTimeSeconds: 30,
        bgpId: '192.0.2.1',
        capabilities: [
          { kind: 'multiprotocol', afi: Afi.IPV4, safi: 1 },
          { kind: 'multiprotocol', afi: Afi.IPV6, safi: 1 },
          { kind: 'route-refresh' },
          { kind: 'four-octet-as', as: OUR_AS },
          { kind: 'graceful-restart', restarted: false, notification: false, restartTimeSeconds: 0, families: [] },
        ],
      }),
    );
    const out = join(OUT, router.name);
    rmSync(out, { recursive: true, force: true });
    mkdirSync(out, { recursive: true });
    const save = (name: string, wire: Uint8Array) => writeFileSync(join(out, `${name}.bin`), wire);

    save('open', await recorder.waitFor('OPEN', (m) => m.type === 'open'));
    socket.write(encodeKeepalive());
    save('keepalive', await recorder.waitFor('KEEPALIVE', (m) => m.type === 'keepalive'));
    const isEndOfRib = (afi: number) => (m: ReceivedMessage) => m.type === 'update' && endOfRib(m) === afi;
    save('update-end-of-rib-ipv4', await recorder.waitFor('IPv4 End-of-RIB', isEndOfRib(Afi.IPV4)));
    save('update-end-of-rib-ipv6', await recorder.waitFor('IPv6 End-of-RIB', isEndOfRib(Afi.IPV6)));
    let n = 0;
    for (const { wire, message } of recorder.messages) {
      if (message.type === 'update' && endOfRib(message) === undefined) save(`update-${++n}-${message.nlri.length ? 'ipv4' : 'ipv6'}`, wire);
    }
    if (router.askForRefresh) {
      router.askForRefresh(netns, dir);
      save('route-refresh', await recorder.waitFor('ROUTE-REFRESH', (m) => m.type === 'route-refresh'));
    }
    socket.write(encodeRouteRefresh(Afi.IPV4, 1));
    const name = router.provokeNotification(socket, netns);
    save(name, await recorder.waitFor('NOTIFICATION', (m) => m.type === 'notification'));
    socket.destroy();
    console.error(`${router.name}: ${readdirSync(out).join(', ')}`);
  } finally {
    child.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const inside = process.env.FLB_CAPTURE_ROUTER;
  if (inside) {
    await captureInside(inside === 'bird' ? bird : gobgp, process.env.FLB_CAPTURE_NETNS!);
    return;
  }
  for (const name of ['bird', 'gobgp']) {
    const routerNetns = `flbcap-${process.pid}-${name}`;
    const peerNetns = `flbcap-${process.pid}-peer`;
    const ip = (...args: string[]) => execFileSync('ip', args);
    ip('netns', 'add', routerNetns);
    ip('netns', 'add', peerNetns);
    try {
      ip('link', 'add', 'cap0', 'netns', routerNetns, 'type', 'veth', 'peer', 'name', 'cap1', 'netns', peerNetns);
      for (const [netns, link, address] of [
        [routerNetns, 'cap0', '10.255.0.1/24'],
        [peerNetns, 'cap1', '10.255.0.2/24'],
      ] as const) {
        ip('-n', netns, 'link', 'set', 'lo', 'up');
        ip('-n', netns, 'addr', 'add', address, 'dev', link);
        ip('-n', netns, 'link', 'set', link, 'up');
      }
      // The script runs in the peer's namespace and starts the router in the other.
      execFileSync('ip', ['netns', 'exec', peerNetns, process.execPath, process.argv[1]!], {
        stdio: 'inherit',
        env: { ...process.env, FLB_CAPTURE_ROUTER: name, FLB_CAPTURE_NETNS: routerNetns },
      });
    } finally {
      ip('netns', 'del', routerNetns);
      ip('netns', 'del', peerNetns);
    }
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
