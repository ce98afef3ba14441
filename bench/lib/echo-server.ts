// A TCP echo server for the interception benchmark: prints "ready", echoes until killed.
import { createServer } from 'node:net';

const [host, port] = [process.argv[2] ?? '0.0.0.0', Number(process.argv[3] ?? 15001)];
createServer((socket) => {
  // A client's reset would otherwise be an unhandled 'error' that ends the server mid-run.
  socket.on('error', () => {});
  socket.setNoDelay(true);
  socket.pipe(socket);
}).listen(port, host, () => process.stdout.write('ready\n'));
