// The webhook's serving certificate from files someone else keeps: a mounted Secret (cert-manager
// issues and renews it; `flb webhook serve --tls-dir`). The kubelet updates a mounted Secret by
// writing a new timestamped folder and swapping the `..data` symlink in one rename, so the files
// are never edited in place: the folder is watched, not the files (a watch on a file follows the
// old inode and never fires again). A renewal that cannot be read or does not hold together keeps
// the certificate being served: the apiserver goes on trusting it until it expires.
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync, watch, type FSWatcher } from 'node:fs';
import { join } from 'node:path';
import { ActionableError } from '../common/errors.js';
import type { Logger } from '../common/log.js';

export const CERT_FILE = 'tls.crt';
export const KEY_FILE = 'tls.key';

/** What the webhook serves: a certificate (with its chain, as cert-manager writes it) and its key. */
export interface ServedCertificate {
  certPem: string;
  keyPem: string;
}

export class CertificateFileError extends ActionableError {}

const HINT =
  '--tls-dir is the folder of a mounted Secret with tls.crt and tls.key (the chart mounts the one its cert-manager Certificate fills: kubectl describe certificate -n <mesh namespace> flb-injector)';

/**
 * Reads and checks `dir`/tls.crt and `dir`/tls.key: both present, PEM, the key the certificate's,
 * the certificate valid now. Throws a CertificateFileError naming the file and what is wrong.
 */
export function readCertificateFiles(dir: string, now = Date.now()): ServedCertificate {
  const read = (file: string) => {
    const path = join(dir, file);
    try {
      return readFileSync(path, 'utf8');
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      const why = code === 'ENOENT' ? 'does not exist' : code === 'EACCES' ? 'cannot be read (permission denied)' : (error as Error).message;
      throw new CertificateFileError(`the webhook certificate file ${path} ${why}`, HINT, { cause: error });
    }
  };
  const certPem = read(CERT_FILE);
  const keyPem = read(KEY_FILE);
  let certificate: X509Certificate;
  try {
    certificate = new X509Certificate(certPem);
  } catch (error) {
    throw new CertificateFileError(`${join(dir, CERT_FILE)} is not a PEM certificate: ${(error as Error).message}`, HINT, { cause: error });
  }
  let key;
  try {
    key = createPrivateKey(keyPem);
  } catch (error) {
    throw new CertificateFileError(`${join(dir, KEY_FILE)} is not a PEM private key: ${(error as Error).message}`, HINT, { cause: error });
  }
  if (!certificate.checkPrivateKey(key)) {
    throw new CertificateFileError(`${join(dir, KEY_FILE)} is not the key of the certificate in ${join(dir, CERT_FILE)} (${certificate.subject})`, HINT);
  }
  const validFrom = new Date(certificate.validFrom).getTime();
  const validTo = new Date(certificate.validTo).getTime();
  if (now >= validTo) throw new CertificateFileError(`the certificate in ${join(dir, CERT_FILE)} expired at ${new Date(validTo).toISOString()}`, HINT);
  if (now < validFrom)
    throw new CertificateFileError(`the certificate in ${join(dir, CERT_FILE)} is not valid before ${new Date(validFrom).toISOString()}`, HINT);
  return { certPem, keyPem };
}

/** When a certificate expires (ms since the epoch). */
export function certificateExpiry(certPem: string): number {
  return new Date(new X509Certificate(certPem).validTo).getTime();
}

export interface MountedCertificateOptions {
  dir: string;
  log: Logger;
  /** A renewed certificate, good and different from the one served. */
  onRenewed(certificate: ServedCertificate): void;
  /** A change that could not be taken: the served certificate stays. */
  onRefused?(error: CertificateFileError): void;
  /**
   * Files are also re-read this often, in case a change was not seen (inotify does not report
   * changes on some network and FUSE file systems). Default 60 s.
   */
  pollIntervalMs?: number;
  /** Wait this long after a change before reading, so a writer's several steps are read as one. Default 100 ms. */
  settleMs?: number;
}

/** The certificate in a folder, kept current as the folder changes. */
export class MountedCertificate {
  private served: ServedCertificate;
  private readonly watcher: FSWatcher | undefined;
  private readonly poll: NodeJS.Timeout;
  private settle: NodeJS.Timeout | undefined;
  /** The last refusal's message: a bad renewal is logged once, not on every poll. */
  private refused: string | undefined;

  /** Reads the folder (throws a CertificateFileError when it holds no good certificate) and watches it. */
  constructor(private readonly options: MountedCertificateOptions) {
    this.served = readCertificateFiles(options.dir);
    const pollOnly = (error: unknown) =>
      options.log.warn({ err: error, dir: options.dir }, 'cannot watch the certificate folder; re-reading it on a timer only');
    try {
      this.watcher = watch(options.dir, { persistent: false }, () => this.changed());
      this.watcher.on('error', pollOnly);
    } catch (error) {
      // No inotify watch left (ENOSPC, EMFILE: the node's limit, shared by every pod): renewals are still found, later.
      pollOnly(error);
    }
    this.poll = setInterval(() => this.reload(), options.pollIntervalMs ?? 60_000);
    this.poll.unref();
  }

  current(): ServedCertificate {
    return this.served;
  }

  private changed(): void {
    clearTimeout(this.settle);
    this.settle = setTimeout(() => this.reload(), this.options.settleMs ?? 100);
    this.settle.unref();
  }

  /** Re-reads the files; a good certificate that differs from the served one is taken. */
  reload(): void {
    let next: ServedCertificate;
    try {
      next = readCertificateFiles(this.options.dir);
    } catch (error) {
      if (!(error instanceof CertificateFileError)) throw error;
      if (error.message !== this.refused) {
        this.refused = error.message;
        this.options.log.error(
          { dir: this.options.dir, problem: error.message },
          'the changed certificate files were refused; still serving the certificate read before',
        );
        this.options.onRefused?.(error);
      }
      return;
    }
    this.refused = undefined;
    if (next.certPem === this.served.certPem && next.keyPem === this.served.keyPem) return;
    this.served = next;
    this.options.onRenewed(next);
  }

  stop(): void {
    clearTimeout(this.settle);
    clearInterval(this.poll);
    this.watcher?.close();
  }
}
