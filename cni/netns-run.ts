import { execa } from 'execa';
import { ActionableError } from '../common/errors.js';

/** Runs a command (the iptables tools, ip), inside options.netns when given; a failure is an ActionableError quoting its stderr. */
export async function run(command: string, args: string[], options: { netns?: string }, input?: string): Promise<string> {
  const [file, argv] = options.netns ? ['nsenter', [`--net=${options.netns}`, '--', command, ...args]] : [command, args];
  try {
    const result = await execa(file, argv, { ...(input !== undefined ? { input } : {}), stripFinalNewline: false });
    return result.stdout;
  } catch (error) {
    const e = error as { code?: string; stderr?: string; shortMessage?: string };
    if (e.code === 'ENOENT') {
      const hint =
        file === 'nsenter'
          ? 'install util-linux'
          : file === 'ip'
            ? 'install iproute2 (apt-get install iproute2)'
            : 'install iptables (apt-get install iptables)';
      throw new ActionableError(`${file} is not installed`, hint);
    }
    throw new ActionableError(`${command} ${args.join(' ')} failed: ${(e.stderr ?? e.shortMessage ?? String(error)).trim()}`);
  }
}
