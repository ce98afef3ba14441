import type { Server as HttpServer } from 'node:http';
import type { Server } from 'node:net';

/**
 * Starts listening (on `::`, both IPv4 and IPv6: dual-stack, so one socket serves both
 * families) and resolves with the port bound, which differs from `port` when it is 0.
 */
export function listen(server: Server | HttpServer, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port, ipv6Only: false }, () => {
      server.off('error', reject);
      const address = server.address();
      resolve(typeof address === 'object' && address ? address.port : port);
    });
  });
}
