// bench/bgp.ts's flb sender for the scale run: one process, one speaker per session (each its own
// source address, passive on port 179, so the receiving BIRD decides when the sessions start), each
// announcing its own slice of the prefixes before it listens. Options are a JSON file named by argv[2]; prints
// `ready` once every speaker listens, and stops on SIGTERM.
import { readFileSync } from 'node:fs';
import { pino } from 'pino';
import { BgpSpeaker } from '../../sidecar/bgp/speaker.js';
import { Afi } from '../../sidecar/bgp/wire/index.js';

interface Options {
  localAs: number;
  routerAs: number;
  sessions: { address: string; router: string; prefixes: string[] }[];
}

const options = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as Options;
const log = pino({ level: process.env.FLB_LOG_LEVEL ?? 'warn' }, pino.destination(2));
const speakers = options.sessions.map(({ address, router, prefixes }) => {
  const speaker = new BgpSpeaker({
    localAs: options.localAs,
    routerId: address,
    holdTimeSeconds: 90,
    listen: { address, port: 179 },
    peers: [{ address: router, remoteAs: options.routerAs, families: [Afi.IPV4], passive: true }],
    log,
  });
  for (const prefix of prefixes) speaker.announce(prefix);
  return speaker;
});
await Promise.all(speakers.map((speaker) => speaker.start()));
process.stdout.write('ready\n');
process.on('SIGTERM', () => {
  for (const speaker of speakers) speaker.stop('the benchmark is over');
  setTimeout(() => process.exit(0), 200);
});
