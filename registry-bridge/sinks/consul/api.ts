// Consul's HTTP API as the Consul sink writes it: catalog register and deregister, and the two reads
// of its own node. node:http with the ACL token and TLS of the sink's config, a bounded answer and
// a timeout on every call (a Consul that hangs must not hold a sync forever).
import { readFileSync } from 'node:fs';
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { ConsulSinkConfig } from '../../../common/contract/index.js';

const MAX_ANSWER_BYTES = 64 * 1024 * 1024;

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

export class ConsulApi {
  private readonly agent: HttpAgent;
  private readonly base: URL;
  private token?: string;

  constructor(private readonly config: ConsulSinkConfig) {
    this.base = new URL(config.address);
    const read = (file: string, what: string) => {
      try {
        return readFileSync(file);
      } catch (error) {
        throw new ConsulWriteError(`consul sink ${config.name}: cannot read the ${what} ${file} (${(error as Error).message}); check sinks[].tls`);
      }
    };
    const maxSockets = config.writeConcurrency + 1;
    this.agent =
      this.base.protocol === 'https:'
        ? new HttpsAgent({
            keepAlive: true,
            maxSockets,
            ...(config.tls?.caFile ? { ca: read(config.tls.caFile, 'CA') } : {}),
            ...(config.tls?.certFile ? { cert: read(config.tls.certFile, 'client certificate') } : {}),
            ...(config.tls?.keyFile ? { key: read(config.tls.keyFile, 'client key') } : {}),
            ...(config.tls?.serverName ? { servername: config.tls.serverName } : {}),
          })
        : new HttpAgent({ keepAlive: true, maxSockets });
    this.reloadToken();
  }

  /** Reads the token file again (Consul refused the token: the Secret may have rotated). */
  reloadToken(): void {
    if (!this.config.tokenFile) return;
    try {
      this.token = readFileSync(this.config.tokenFile, 'utf8').trim();
    } catch (error) {
      throw new ConsulWriteError(`cannot read the ACL token file ${this.config.tokenFile} (${(error as Error).message}); check sinks[].tokenFile`);
    }
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
            if (size > MAX_ANSWER_BYTES) {
              fail(new ConsulWriteError(`${where}: the answer passed ${MAX_ANSWER_BYTES} bytes; refused`));
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
      req.setTimeout(timeoutMs, () => req.destroy(new ConsulWriteError(`${where}: no answer within ${Math.round(timeoutMs / 1000)} s`)));
      req.on('error', fail);
      req.end(payload);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}
