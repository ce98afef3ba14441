import type { Socket } from 'node:net';

export type SpliceOutcome = 'success' | 'reset';

export interface SpliceResult {
  outcome: SpliceOutcome;
  /** Bytes from the downstream (client) side to the upstream, and back. */
  sent: number;
  received: number;
}

/**
 * Copies bytes both ways between two sockets with backpressure and half-close, until both are
 * done. Written out rather than `a.pipe(b); b.pipe(a)`: pipe() leaves the other side open on an
 * error, needs four more listeners per socket for what we track here (bytes, resets), and its
 * extra stream machinery is measurable at 50,000 small messages a second on one core.
 *
 * The outcome is 'reset' when the upstream reset the connection (ECONNRESET/EPIPE), which outlier
 * detection counts as a failure: an endpoint that accepts and then resets is ejected.
 */
export function splice(downstream: Socket, upstream: Socket, done: (result: SpliceResult) => void): void {
  let sent = 0;
  let received = 0;
  let outcome: SpliceOutcome = 'success';
  let open = 2;
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    done({ outcome, sent, received });
  };
  const closed = () => {
    if (--open === 0) finish();
  };
  const forward = (from: Socket, to: Socket, count: (n: number) => void) => {
    from.on('data', (chunk: Buffer) => {
      count(chunk.length);
      if (!to.write(chunk)) from.pause();
    });
    to.on('drain', () => from.resume());
    from.on('end', () => {
      if (!to.destroyed) to.end();
    });
  };
  forward(downstream, upstream, (n) => (sent += n));
  forward(upstream, downstream, (n) => (received += n));
  upstream.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'ECONNRESET' || error.code === 'EPIPE') outcome = 'reset';
    // The client sees a reset too, rather than a clean end that would hide the failure.
    downstream.resetAndDestroy();
  });
  downstream.on('error', () => upstream.destroy());
  upstream.on('close', () => {
    if (!downstream.destroyed && downstream.writableEnded === false && upstream.readableEnded === false) downstream.destroy();
    closed();
  });
  downstream.on('close', () => {
    if (!upstream.destroyed && upstream.readableEnded === false) upstream.destroy();
    closed();
  });
}
