// What the Consul source and the Consul sink both need to talk to Consul: one keep-alive agent with
// the config's TLS files (read once, at start) and the ACL token read from its file. `fail` makes
// each side's own error, naming its own config field.
import { readFileSync } from 'node:fs';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';

export interface ConsulTlsFiles {
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  serverName?: string;
}

/** `fail('cannot read the CA /x (ENOENT ...)')`: the caller's error with where to look. */
export type ConsulFailure = (detail: string) => Error;

export function consulAgent(base: URL, tls: ConsulTlsFiles | undefined, maxSockets: number, fail: ConsulFailure): HttpAgent {
  if (base.protocol !== 'https:') return new HttpAgent({ keepAlive: true, maxSockets });
  const read = (file: string, what: string) => {
    try {
      return readFileSync(file);
    } catch (error) {
      throw fail(`cannot read the ${what} ${file} (${(error as Error).message})`);
    }
  };
  return new HttpsAgent({
    keepAlive: true,
    maxSockets,
    ...(tls?.caFile ? { ca: read(tls.caFile, 'CA') } : {}),
    ...(tls?.certFile ? { cert: read(tls.certFile, 'client certificate') } : {}),
    ...(tls?.keyFile ? { key: read(tls.keyFile, 'client key') } : {}),
    ...(tls?.serverName ? { servername: tls.serverName } : {}),
  });
}

/** The ACL token in `file`, trimmed. */
export function readConsulToken(file: string, fail: ConsulFailure): string {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch (error) {
    throw fail(`cannot read the ACL token file ${file} (${(error as Error).message})`);
  }
}
