/*
 * The errors every `flb` command reports the same way (common/cli.ts): a usage error exits 2, an
 * actionable error prints its hint. Helpers here turn the system's bare errors (EADDRINUSE, ...)
 * into messages that say which listener failed and what to do.
 */

/** Exit codes every `flb` subcommand uses. */
export const ExitCode = {
  ok: 0,
  failure: 1,
  usage: 2,
} as const;

/** A mistake in how the command was called: exit code 2, with a hint of what to do instead. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** Something the user can act on; `hint` says what to do next. */
export class ActionableError extends Error {
  override readonly name = 'ActionableError';
  constructor(
    message: string,
    readonly hint?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** One of a command's listeners, as the user knows it. */
export interface Listener {
  /** What listens, e.g. 'the repo API', "the sidecar's outbound listener". */
  what: string;
  /** host:port (IPv6 in brackets), or a Unix socket path. */
  address: string;
  /** The flag that moves it, e.g. '--listen HOST:PORT', '--outbound-port PORT'. */
  flag: string;
}

/** `host:port`, with brackets around an IPv6 host. */
export function formatAddress(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The address is taken: names the listener, how to find who holds it, and the flag that moves it. */
export function portInUse(listener: Listener, cause?: unknown): ActionableError {
  const port = /:(\d+)$/.exec(listener.address)?.[1];
  const finder = port ? ` (see who: ss -ltunp 'sport = :${port}')` : listener.address.startsWith('/') ? ` (see who: ss -lxp | grep ${listener.address})` : '';
  return new ActionableError(
    `${listener.what} cannot listen on ${listener.address}: another process is listening there`,
    `stop that process${finder}, or move ${listener.what} with ${listener.flag}`,
    { cause },
  );
}

/**
 * A listen() failure as the user should read it: a taken address, a privileged port or an
 * address this machine does not have each name the listener and the flag that moves it; any other
 * error is returned unchanged.
 */
export function listenError(error: unknown, listener: Listener): unknown {
  switch ((error as { code?: unknown } | null)?.code) {
    case 'EADDRINUSE':
      return portInUse(listener, error);
    case 'EACCES':
      return new ActionableError(
        `${listener.what} cannot listen on ${listener.address}: permission denied`,
        `ports below 1024 need root or CAP_NET_BIND_SERVICE, and a socket's folder must be writable: choose another with ${listener.flag}`,
        { cause: error },
      );
    case 'EADDRNOTAVAIL':
      return new ActionableError(
        `${listener.what} cannot listen on ${listener.address}: that address is not one of this machine's`,
        `give an address of this machine (or 0.0.0.0 / [::] for all) with ${listener.flag}`,
        { cause: error },
      );
    default:
      return error;
  }
}
