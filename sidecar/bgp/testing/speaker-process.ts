// The speaker as a process of its own, for the end-to-end tests (test-e2e/bgp.test.ts bundles it
// with esbuild and runs it in a network namespace), until `flb bgp` runs it for users. Its options
// are JSON in argv[2]; it reads commands on stdin, one a line: `announce PREFIX [ASN:VALUE...]`,
// `withdraw PREFIX`, `status` (answered with one JSON line on stdout); SIGTERM stops it with Cease.
import { createInterface } from 'node:readline';
import { pino } from 'pino';
import { BgpSpeaker, type SpeakerOptions } from '../speaker.js';

const options = JSON.parse(process.argv[2]!) as Omit<SpeakerOptions, 'log'>;
const speaker = new BgpSpeaker({ ...options, log: pino({ level: process.env.FLB_LOG_LEVEL ?? 'info' }, pino.destination(2)) });
speaker.start();
for await (const line of createInterface({ input: process.stdin })) {
  const [command, prefix, ...communities] = line.trim().split(/\s+/);
  try {
    if (command === 'announce') speaker.announce(prefix!, { communities });
    else if (command === 'withdraw') speaker.withdraw(prefix!);
    else if (command === 'status') process.stdout.write(`${JSON.stringify(speaker.status())}\n`);
    else throw new Error(`unknown command ${command}`);
  } catch (error) {
    process.stdout.write(`${JSON.stringify({ error: (error as Error).message })}\n`);
  }
}
process.on('SIGTERM', () => {
  speaker.stop('SIGTERM');
  setTimeout(() => process.exit(0), 200);
});
