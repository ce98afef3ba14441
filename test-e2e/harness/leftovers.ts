import { existsSync, readdirSync, readFileSync } from 'node:fs';

/** Live processes whose command line mentions `marker` (the control plane's folder is in every server's flags). */
export function processesMentioning(marker: string): { pid: number; cmdline: string }[] {
  const found: { pid: number; cmdline: string }[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').join(' ');
      const state = readFileSync(`/proc/${entry}/stat`, 'utf8').split(') ')[1]?.[0];
      if (state !== 'Z' && cmdline.includes(marker)) found.push({ pid: Number(entry), cmdline });
    } catch {
      // the process ended while we looked
    }
  }
  return found;
}

/** Waits until no process mentions `dir` and `dir` is gone; returns what is left after `timeoutMs`. */
export async function waitForNoLeftovers(dir: string, timeoutMs = 15_000): Promise<{ processes: string[]; dirExists: boolean }> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const processes = processesMentioning(dir).map((p) => `${p.pid}: ${p.cmdline.slice(0, 120)}`);
    const dirExists = existsSync(dir);
    if ((processes.length === 0 && !dirExists) || Date.now() > deadline) return { processes, dirExists };
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** True while `pid` runs; a zombie (dead, not yet reaped by whoever inherited it) counts as gone. */
export function isAlive(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0] !== 'Z';
  } catch {
    return false;
  }
}
