/*
 * The flag that sets each of the sidecar's ports, named where a port is wrong (the parser, /ready
 * when a port differs from the mesh's). Its own module: cli.ts, loaded by every `flb` command, must
 * not load the sidecar to know them.
 */
import type { SidecarPorts } from '../common/contract/mesh.js';

/** As the injector passes the mesh's ports (`mesh.ports`): `--admin-port=15000`, ... */
export const PORT_FLAGS: Readonly<Record<keyof SidecarPorts, string>> = {
  admin: '--admin-port',
  outbound: '--outbound-port',
  inbound: '--inbound-port',
  metrics: '--metrics-port',
  dns: '--dns-port',
  livenessProbe: '--liveness-probe-port',
  readinessProbe: '--readiness-probe-port',
  startupProbe: '--startup-probe-port',
};
