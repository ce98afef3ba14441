// Interception benchmark client: `connections` opens, pings 64 bytes and closes connections one after
// another; `requests` ping-pongs 64 bytes on one connection. Prints {rate, p50Us, p99Us} as JSON.
import { connect } from 'node:net';

const [mode, host, portText, secondsText] = process.argv.slice(2);
const port = Number(portText);
const until = performance.now() + Number(secondsText ?? 5) * 1000;
const payload = Buffer.alloc(64, 120);
const samples: number[] = [];

function once(socket: ReturnType<typeof connect>): Promise<void> {
  return new Promise((resolve, reject) => {
    let got = 0;
    const onData = (d: Buffer) => {
      got += d.length;
      if (got >= payload.length) {
        socket.off('data', onData);
        resolve();
      }
    };
    socket.on('data', onData);
    socket.once('error', reject);
    socket.write(payload);
  });
}

const opened = (): Promise<ReturnType<typeof connect>> =>
  new Promise((resolve, reject) => {
    const s = connect({ host, port, noDelay: true }, () => resolve(s));
    s.once('error', reject);
  });

if (mode === 'connections') {
  while (performance.now() < until) {
    const t = performance.now();
    const socket = await opened();
    await once(socket);
    socket.destroy();
    samples.push(performance.now() - t);
  }
} else {
  const socket = await opened();
  while (performance.now() < until) {
    const t = performance.now();
    await once(socket);
    samples.push(performance.now() - t);
  }
  socket.destroy();
}
samples.sort((a, b) => a - b);
const q = (p: number) => Math.round(1000 * (samples[Math.floor(p * samples.length)] ?? 0));
process.stdout.write(`${JSON.stringify({ count: samples.length, rate: samples.length / Number(secondsText ?? 5), p50Us: q(0.5), p99Us: q(0.99) })}\n`);
