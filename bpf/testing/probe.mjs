// The processes of the eBPF end-to-end test (test-e2e/bpf-redirect.test.ts): the pod's run inside the
// test's cgroup and network namespace, the peer in a network namespace of its own.
//
//   node probe.mjs serve sidecar      in the pod: a stand-in sidecar on [::]:15001 and a DNS port on
//                                     [::]:15053 that answer each connection with the original
//                                     destination the sidecar's own addon reads (SO_ORIGINAL_DST),
//                                     its inbound port [::]:15003 likewise (eBPF mode's iptables rule),
//                                     and the pod's app on [::]:8080, answering {"via":"pod-app"}, and a
//                                     resolver on 127.0.0.1 and ::1 port 15053 (UDP)
//   node probe.mjs serve peer         on another host: [::]:8080 and [::]:9090 answer {"via":"direct"}
//                                     (both print "ready" once all listen)
//   node probe.mjs dial HOST PORT     connects, prints {"peer": getpeername, "reply": the answer}
//   node probe.mjs udp-dial HOST PORT one DNS query for probe.test over a connected UDP socket (as
//                                     glibc sends them), udp-send over an unconnected one (sendto);
//                                     prints the answer and the address it came from
import { createRequire } from 'node:module';
import dnsPacket from 'dns-packet';
import { createSocket } from 'node:dgram';
import { createConnection, createServer, isIPv6 } from 'node:net';
import { fileURLToPath } from 'node:url';

const [mode, hostOrRole, port] = process.argv.slice(2);

function serve(role) {
  const addon = createRequire(import.meta.url)(fileURLToPath(new URL('../../sidecar/native/build/flb-sidecar.node', import.meta.url)));
  const answer = (via, readOriginal) => (socket) => {
    const reply = { via, local: `${socket.localAddress}:${socket.localPort}` };
    if (readOriginal) {
      try {
        reply.original = addon.originalDestination(socket._handle.fd);
      } catch (error) {
        reply.error = error.message;
      }
    }
    socket.end(`${JSON.stringify(reply)}\n`);
    socket.on('error', () => {});
  };
  const listeners =
    role === 'sidecar'
      ? [
          [15001, answer('sidecar', true)],
          [15053, answer('dns', true)],
          [15003, answer('inbound', true)],
          [8080, answer('pod-app', false)],
        ]
      : [
          [8080, answer('direct', false)],
          [9090, answer('direct', false)],
        ];
  // The sidecar's resolver too: it is one more thing to wait for.
  const waitingFor = listeners.length + (role === 'sidecar' ? 1 : 0);
  let started = 0;
  const oneReady = () => ++started === waitingFor && process.stdout.write('ready\n');
  for (const [listenPort, handler] of listeners) createServer(handler).listen({ host: '::', port: listenPort }, oneReady);
  if (role === 'sidecar') resolver(oneReady);
}

/** The sidecar's resolver, as far as these tests need it: every A query is 10.200.0.77, every AAAA fd00:200::77. */
function resolver(ready) {
  let bound = 0;
  for (const [type, host] of [
    ['udp4', '127.0.0.1'],
    ['udp6', '::1'],
  ]) {
    const socket = createSocket(type);
    socket.on('message', (message, from) => {
      const query = dnsPacket.decode(message);
      const question = query.questions[0];
      const answers =
        question?.type === 'A'
          ? [{ type: 'A', name: question.name, data: '10.200.0.77' }]
          : question?.type === 'AAAA'
            ? [{ type: 'AAAA', name: question.name, data: 'fd00:200::77' }]
            : [];
      socket.send(
        dnsPacket.encode({
          type: 'response',
          id: query.id,
          flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE,
          questions: query.questions,
          answers,
        }),
        from.port,
        from.address,
      );
    });
    socket.bind(15053, host, () => ++bound === 2 && ready());
  }
}

/** One A query over UDP, connected first (as glibc does) or not (sendto); prints where the answer came from. */
function udpDial(connected) {
  const socket = createSocket(isIPv6(hostOrRole) ? 'udp6' : 'udp4');
  const query = dnsPacket.encode({ type: 'query', id: 4242, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name: 'probe.test' }] });
  const timer = setTimeout(() => finish({ error: 'timeout' }), 5000);
  const finish = (result) => {
    clearTimeout(timer);
    process.stdout.write(`${JSON.stringify(result)}\n`);
    process.exit(0);
  };
  socket.on('message', (message, from) => {
    const answer = dnsPacket.decode(message).answers[0]?.data;
    finish({ from: { address: from.address, port: from.port }, answer, ...(connected ? { peer: socket.remoteAddress() } : {}) });
  });
  socket.on('error', (error) => finish({ error: error.code ?? error.message }));
  if (connected) socket.connect(Number(port), hostOrRole, () => socket.send(query));
  else socket.send(query, Number(port), hostOrRole);
}

function dial() {
  const socket = createConnection({ host: hostOrRole, port: Number(port) });
  let data = '';
  let peer;
  const timer = setTimeout(() => finish({ error: 'timeout' }), 5000);
  const finish = (result) => {
    clearTimeout(timer);
    process.stdout.write(`${JSON.stringify(result)}\n`);
    process.exit(0);
  };
  socket.on('connect', () => {
    peer = { address: socket.remoteAddress, port: socket.remotePort };
  });
  socket.on('data', (chunk) => (data += chunk));
  socket.on('end', () => finish({ peer, reply: JSON.parse(data) }));
  socket.on('error', (error) => finish({ peer, error: error.code ?? error.message }));
}

if (mode === 'serve' && (hostOrRole === 'sidecar' || hostOrRole === 'peer')) serve(hostOrRole);
else if (mode === 'dial' && hostOrRole && port) dial();
else if ((mode === 'udp-dial' || mode === 'udp-send') && hostOrRole && port) udpDial(mode === 'udp-dial');
else {
  process.stderr.write('usage: probe.mjs serve sidecar|peer, or dial|udp-dial|udp-send HOST PORT|peer, or dial HOST PORT\n');
  process.exit(2);
}
