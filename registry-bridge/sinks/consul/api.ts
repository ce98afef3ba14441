// Consul's HTTP API as the Consul sink writes it: catalog register and deregister, and the two reads
// of its own node. node:http with the ACL token and TLS of the sink's config, a bounded answer and
// a timeout on every call (a Consul that hangs must not hold a sync forever).
import { request as httpRequest, type Agent as HttpAgent } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { consulAgent, readConsulToken } from '../../core/consul-http.js';
import type { ConsulSinkConfig } from '../../../common/contract/index.js';

/** The largest answer read (the node's two reads at ~1.4 KB per instance together: registry-bridge/README.md, One node's size). */
export const MAX_ANSWER_BYTES = 64 * 1024 * 1024;

export class ConsulWriteError extends Error {
  constructor(
    message: string,
    /** The HTTP status when Consul answered; undefined: it could not be reached. */
    readonly status?: number,
  ) {
    super(message);
    this.name = 'ConsulWriteError';
  }
}

/** An answer over the size the sink reads: Consul reached, so not "unreachable", but nothing to decide on. */
export class ConsulAnswerTooLargeError extends ConsulWriteError {
  constructor(message: string) {
    super(message);
    this.name = 'ConsulAnswerTooLargeError';
  }
}

/**
 * Connected, but no answer in time: Consul is there and slow (a large node's writes on a busy
 * server), not away; a write may or may not have been applied. Not a reason to read the node again.
 */
export class ConsulSlowError extends ConsulWriteError {
  constructor(message: string) {
    super(message);
    this.name = 'ConsulSlowError';
  }
}

export class ConsulApi {
  private readonly agent: HttpAgent;
  private readonly base: URL;
  private token?: string;

  constructor(
    private readonly config: ConsulSinkConfig,
    private readonly maxAnswerBytes = MAX_ANSWER_BYTES,
  ) {
    this.base = new URL(config.address);
    this.agent = consulAgent(
      this.base,
      config.tls,
      config.writeConcurrency + 1,
      (detail) => new ConsulWriteError(`consul sink ${config.name}: ${detail}; check sinks[].tls`),
    );
    this.reloadToken();
  }

  /** Reads the token file again (Consul refused the token: the Secret may have rotated). */
  reloadToken(): void {
    if (!this.config.tokenFile) return;
    this.token = readConsulToken(this.config.tokenFile, (detail) => new ConsulWriteError(`${detail}; check sinks[].tokenFile`));
  }

  call(method: 'GET' | 'PUT', path: string, body?: unknown): Promise<unknown> {
    const url = new URL(path, this.base);
    if (this.config.datacenter) url.searchParams.set('dc', this.config.datacenter);
    const where = `${method} ${url.pathname}`;
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const timeoutMs = this.config.timeoutSeconds * 1000;
    return new Promise((resolve, reject) => {
      let done = false;
      const fail = (error: Error) => {
        if (done) return;
        done = true;
        reject(error instanceof ConsulWriteError ? error : new ConsulWriteError(`${where}: ${error.message}`));
      };
      const req = (this.base.protocol === 'https:' ? httpsRequest : httpRequest)(
        url,
        {
          method,
          agent: this.agent,
          headers: {
            accept: 'application/json',
            ...(payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {}),
            ...(this.token ? { 'x-consul-token': this.token } : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (chunk: Buffer) => {
            size += chunk.length;
            if (size > this.maxAnswerBytes) {
              fail(new ConsulAnswerTooLargeError(`${where}: the answer passed ${this.maxAnswerBytes} bytes; refused`));
              res.destroy();
            } else chunks.push(chunk);
          });
          res.on('error', fail);
          res.on('end', () => {
            if (done) return;
            const text = Buffer.concat(chunks).toString('utf8');
            const status = res.statusCode ?? 0;
            if (status !== 200) {
              const what = status === 403 ? 'the ACL token was refused' : `answered ${status}`;
              fail(new ConsulWriteError(`${where}: ${what}: ${text.trim().slice(0, 300)}`, status));
              return;
            }
            try {
              done = true;
              resolve(text === '' ? undefined : JSON.parse(text));
            } catch (error) {
              done = false;
              fail(new ConsulWriteError(`${where}: not JSON (${(error as Error).message})`));
            }
          });
        },
      );
      req.setTimeout(timeoutMs, () => {
        const what = `${where}: no answer within ${Math.round(timeoutMs / 1000)} s`;
        req.destroy(req.socket && !req.socket.connecting ? new ConsulSlowError(what) : new ConsulWriteError(what));
      });
      req.on('error', fail);
      req.end(payload);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}
