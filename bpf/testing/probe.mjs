// The processes of the eBPF end-to-end test (test-e2e/bpf-redirect.test.ts): the pod's run inside the
// test's cgroup and network namespace, the peer in a network namespace of its own.
//
//   node probe.mjs serve sidecar      in the pod: a stand-in sidecar on [::]:15001 and a DNS port on
//                                     [::]:15053 that answer each connection with the original
//                                     destination the sidecar's own addon reads (SO_ORIGINAL_DST),
//                                     and the pod's app on [::]:8080, answering {"via":"pod-app"}
//   node probe.mjs serve peer         on another host: [::]:8080 and [::]:9090 answer {"via":"direct"}
//                                     (both print "ready" once all listen)
//   node probe.mjs dial HOST PORT     connects, prints {"peer": getpeername, "reply": the answer}
import { createRequire } from 'node:module';
import { createConnection, createServer } from 'node:net';
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
          [8080, answer('pod-app', false)],
        ]
      : [
          [8080, answer('direct', false)],
          [9090, answer('direct', false)],
        ];
  let listening = 0;
  for (const [listenPort, handler] of listeners) {
    createServer(handler).listen({ host: '::', port: listenPort }, () => {
      if (++listening === listeners.length) process.stdout.write('ready\n');
    });
  }
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
else {
  process.stderr.write('usage: probe.mjs serve sidecar|peer, or dial HOST PORT\n');
  process.exit(2);
}
