import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, closeSync, readFileSync, appendFileSync } from 'node:fs';
import type { Socket } from 'node:net';

/**
 * Server processes for tests that never outlive the test: each is started under
 * `setpriv --pdeathsig KILL`, so the kernel kills it when the process that spawned it dies,
 * however that happens (a failed test, jest killed, Ctrl-C).
 */
export interface ServerProcess {
  readonly name: string;
  readonly pid: number;
  readonly logFile: string;
  /** Resolves with the exit code (or signal) once the process is gone. */
  readonly exited: Promise<string>;
  isRunning(): boolean;
  stop(graceMs?: number): Promise<void>;
  logTail(lines?: number): string;
}

export function startServer(name: string, binary: string, args: string[], logFile: string, env?: NodeJS.ProcessEnv): ServerProcess {
  const fd = openSync(logFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn('setpriv', ['--pdeathsig', 'KILL', '--', binary, ...args], {
      stdio: ['ignore', fd, fd],
      env: env ?? process.env,
      // A process group of its own: Ctrl-C in a terminal signals the whole foreground group, and
      // the servers must stop in order (the mesh before the apiserver), each when told.
      detached: true,
    });
  } finally {
    closeSync(fd);
  }
  if (child.pid === undefined) throw new Error(`could not start ${name} (${binary}): is util-linux's setpriv installed?`);
  let running = true;
  const exited = new Promise<string>((resolve) => {
    child.once('exit', (code, signal) => {
      running = false;
      resolve(signal ?? `exit code ${code}`);
    });
    child.once('error', (error) => {
      running = false;
      appendFileSync(logFile, `\n[harness] failed to start: ${error.message}\n`);
      resolve(`spawn error: ${error.message}`);
    });
  });
  const pid = child.pid;
  return {
    name,
    pid,
    logFile,
    exited,
    isRunning: () => running,
    async stop(graceMs = 5000) {
      if (!running) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
    logTail(lines = 30) {
      try {
        return readFileSync(logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
      } catch {
        return '(no log)';
      }
    },
  };
}

/**
 * A detached watchdog that removes `dir` (and kills anything listed in `dir`/pids) once this
 * process is gone: it waits for EOF on a pipe whose other end only this process holds, which
 * the kernel closes however this process ends. pdeathsig stops the servers; this cleans the disk.
 */
export function startReaper(dir: string): { dismiss(): Promise<void> } {
  const script = 'cat >/dev/null; for p in $(cat "$1/pids" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done; sleep 0.3; rm -rf -- "$1"';
  const reaper = spawn('sh', ['-c', script, 'flb-reaper', dir], { detached: true, stdio: ['pipe', 'ignore', 'ignore'] });
  reaper.unref();
  (reaper.stdin as unknown as Socket).unref();
  const exited = new Promise<void>((resolve) => reaper.once('exit', () => resolve()));
  return {
    async dismiss() {
      // Held again while we wait, or an otherwise idle event loop would end before 'exit' arrives.
      reaper.ref();
      reaper.kill('SIGKILL');
      reaper.stdin?.destroy();
      await exited;
    },
  };
}
