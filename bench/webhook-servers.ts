// A webhook server for the benchmark, in its own process: `flb` (the real injector's HTTPS
// server and handler) or `bare` (node:https that parses the same AdmissionReview and returns a
// fixed patch). Prints the port, then serves until SIGTERM.
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { createLogger } from '../common/log.js';
import { review } from '../injector/admission.js';
import { InjectorMetrics } from '../injector/metrics.js';
import { startWebhookServer } from '../injector/server.js';
import { admissionReview, namespaces, realisticPod, settings } from '../injector/testdata/reviews.js';

const [kind, certPem, keyPem] = [process.argv[2], Buffer.from(process.argv[3]!, 'base64').toString(), Buffer.from(process.argv[4]!, 'base64').toString()];

if (kind === 'flb') {
  const server = await startWebhookServer({
    host: '127.0.0.1',
    port: 0,
    settings,
    namespaces,
    tls: { cert: certPem, key: keyPem },
    metrics: new InjectorMetrics(),
    log: createLogger('bench', 'warn'),
  });
  process.stdout.write(`${server.port}\n`);
  process.once('SIGTERM', () => void server.close().then(() => process.exit(0)));
} else {
  // The same answer our injector gives, computed once, so the bare server measures only HTTPS + JSON.
  const fixed = (await review(admissionReview(realisticPod), namespaces, settings)).body as { response: { patch: string } };
  const server = createServer({ cert: certPem, key: keyPem, minVersion: 'TLSv1.2' }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = JSON.parse(Buffer.concat(chunks).toString()) as { request: { uid: string } };
      const answer = JSON.stringify({
        apiVersion: 'admission.k8s.io/v1',
        kind: 'AdmissionReview',
        response: { uid: body.request.uid, allowed: true, patchType: 'JSONPatch', patch: fixed.response.patch },
      });
      // Content-Length as the injector sends it: without it this answer went out chunked, in more pieces.
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(answer) }).end(answer);
    });
  });
  server.keepAliveTimeout = 65_000;
  server.listen(0, '127.0.0.1', () => process.stdout.write(`${(server.address() as AddressInfo).port}\n`));
  process.once('SIGTERM', () => server.close(() => process.exit(0)));
}
