// BIRD 2 (Debian's bird2) as the router in the BGP end-to-end tests: its configuration from a list
// of BGP neighbours with the test timers (BIRD's connect-retry and error-wait lowered so a session
// comes back in a second, not minutes), started in a network namespace or in this process's own,
// and what an operator reads from birdc: the routes learned over a protocol, with their attributes,
// and since when a session has been Established.
import { execa } from 'execa';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startServer, type ServerProcess } from '../../devenv/processes.js';
import type { Netns } from './netns.js';

export interface BirdNeighbor {
  /** The protocol's name in birdc. */
  name: string;
  /** BIRD's own address for the session, and its port when it is not 179 (BIRD listens there). */
  local: string;
  localPort?: number;
  localAs: number;
  /** The peer's address, or `range PREFIX` for any peer in it (BIRD spawns a protocol per peer; needs passive). */
  neighbor: string;
  remoteAs: number;
  /** BIRD waits for the peer to connect (default); false: BIRD connects. */
  passive?: boolean;
  holdSeconds: number;
  families: ('ipv4' | 'ipv6')[];
  comment?: string;
}

export interface BirdConfig {
  routerId: string;
  neighbors: BirdNeighbor[];
  /** Learned routes into the kernel table (connections to a VIP then go where BGP says); ECMP merged. */
  kernel?: boolean;
}

export function birdConfig(config: BirdConfig, logFile: string): string {
  const kernel = config.kernel
    ? `# the learned VIPs go into the router's kernel table, so connections to them are forwarded
protocol kernel { ipv4 { export all; }; merge paths on; }
protocol kernel { ipv6 { export all; }; }
`
    : '';
  const protocols = config.neighbors.map(
    (n) => `${n.comment ? `# ${n.comment}\n` : ''}protocol bgp ${n.name} {
  local ${n.local}${n.localPort ? ` port ${n.localPort}` : ''} as ${n.localAs};
  neighbor ${n.neighbor} as ${n.remoteAs};
  ${n.passive === false ? '' : 'passive on;'}
  hold time ${n.holdSeconds}; keepalive time ${Math.max(1, Math.floor(n.holdSeconds / 3))}; connect retry time 1; error wait time 1, 2;
${n.families.map((f) => `  ${f} { import all; export none; };`).join('\n')}
}
`,
  );
  return `router id ${config.routerId};
log "${logFile}" all;
protocol device { scan time 1; }
${kernel}${protocols.join('')}`;
}

/** Throws naming what is missing when BIRD (and any other router tool asked for) is not installed. */
export async function requireRouters(tools = ['bird', 'birdc']): Promise<void> {
  const missing: string[] = [];
  for (const tool of tools) if ((await execa('sh', ['-c', `command -v ${tool}`], { reject: false })).exitCode !== 0) missing.push(tool);
  if (missing.length) throw new Error(`missing ${missing.join(', ')}: run 'npm run setup' (apt-get install bird2 gobgpd)`);
}

/** BIRD's time of day (HH:MM:SS, milliseconds optional) in ms since midnight. */
function msOfDay(text: string): number {
  const [, h, m, sec, ms] = /(\d\d):(\d\d):(\d\d)(?:\.(\d+))?/.exec(text) ?? [];
  if (h === undefined) throw new Error(`not a BIRD time: ${text}`);
  return ((Number(h) * 60 + Number(m)) * 60 + Number(sec)) * 1000 + Number((ms ?? '0').padEnd(3, '0').slice(0, 3));
}

export class Bird {
  private process: ServerProcess;

  private constructor(
    private readonly dir: string,
    private readonly netns: Netns | undefined,
  ) {
    this.process = this.spawn();
  }

  /** BIRD with `config`, its files in `dir`, in `netns` (else this process's namespace), answering birdc. */
  static async start(dir: string, config: BirdConfig, netns?: Netns): Promise<Bird> {
    writeFileSync(join(dir, 'bird.conf'), birdConfig(config, join(dir, 'bird.log')));
    const bird = new Bird(dir, netns);
    await bird.answering();
    return bird;
  }

  private spawn(): ServerProcess {
    const args = ['-f', '-c', join(this.dir, 'bird.conf'), '-s', join(this.dir, 'bird.ctl'), '-P', join(this.dir, 'bird.pid')];
    return this.netns
      ? startServer('bird', 'ip', ['netns', 'exec', this.netns.name, 'bird', ...args], join(this.dir, 'bird.out'))
      : startServer('bird', 'bird', args, join(this.dir, 'bird.out'));
  }

  private async answering(): Promise<void> {
    const deadline = Date.now() + 20_000;
    while ((await this.birdc(['show', 'status'], false)).exitCode !== 0) {
      if (Date.now() > deadline) throw new Error(`BIRD did not answer on ${join(this.dir, 'bird.ctl')} within 20 s: see ${join(this.dir, 'bird.out')}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  private async birdc(args: string[], reject = true): Promise<{ stdout: string; exitCode: number }> {
    const command = ['birdc', '-s', join(this.dir, 'bird.ctl'), ...args];
    const result = this.netns ? await this.netns.exec(command[0]!, command.slice(1), { reject }) : await execa(command[0]!, command.slice(1), { reject });
    return { stdout: result.stdout, exitCode: result.exitCode ?? 0 };
  }

  /** birdc's answer (BIRD exits 1 for "Network not found": that is an answer too). */
  async show(...args: string[]): Promise<string> {
    return (await this.birdc(['show', ...args], false)).stdout;
  }

  /** The prefixes BIRD learned over `protocol`, sorted. */
  async routes(protocol: string): Promise<string[]> {
    return [...(await this.show('route', 'protocol', protocol)).matchAll(/^([0-9a-f.:]+\/\d+)/gm)].map((m) => m[1]!).sort();
  }

  /**
   * When `protocol`'s session became Established, in ms since midnight; undefined when it is not.
   * BIRD works the printed time out from its monotonic clock at each call, so one instant can print
   * 1 ms apart: compare with toBeCloseTo(since, -2) (within 50 ms), a restart being seconds later.
   */
  async establishedSince(protocol: string): Promise<number | undefined> {
    const match = new RegExp(`^${protocol}\\s+BGP\\s+\\S+\\s+up\\s+(\\S+)\\s+Established`, 'm').exec(await this.show('protocols', protocol));
    return match ? msOfDay(match[1]!) : undefined;
  }

  /** When BIRD learned its route to `prefix` over `protocol`, in ms since midnight (as establishedSince). */
  async learnedAt(protocol: string, prefix: string): Promise<number | undefined> {
    const match = new RegExp(`^${prefix.replace(/[./]/g, '\\$&')}\\s+unicast \\[${protocol} (\\S+)\\]`, 'm').exec(
      await this.show('route', 'protocol', protocol, prefix),
    );
    return match ? msOfDay(match[1]!) : undefined;
  }

  /** The protocols BIRD spawned for a `neighbor range` template, with their state lines. */
  async protocols(): Promise<string> {
    return this.show('protocols');
  }

  async stop(): Promise<void> {
    await this.process.stop();
  }

  /** Resets one session from BIRD's side (`birdc restart`), as a router that flaps it. */
  async restartProtocol(protocol: string): Promise<void> {
    const answer = (await this.birdc(['restart', protocol])).stdout;
    if (!answer.includes('restarted')) throw new Error(`birdc restart ${protocol}: ${answer}`);
  }

  /** After stop(): BIRD again with the same configuration (a router restart). */
  async startAgain(): Promise<void> {
    this.process = this.spawn();
    await this.answering();
  }

  /** The configuration replaced and applied live (`birdc configure`): protocols left as they were are not restarted. */
  async reconfigure(config: BirdConfig): Promise<void> {
    writeFileSync(join(this.dir, 'bird.conf'), birdConfig(config, join(this.dir, 'bird.log')));
    const answer = (await this.birdc(['configure'])).stdout;
    if (!/Reconfigured|Reconfiguration in progress/.test(answer)) throw new Error(`birdc configure: ${answer}`);
  }
}
