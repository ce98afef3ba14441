// The real-kubelet node's control plane, in a process of its own that run.ts starts under
// `setpriv --pdeathsig TERM`: if run.ts is killed outright, the plane and the mesh still stop in
// order. The dev control plane (devenv/controlplane.ts, its certificate also naming the gateway)
// and flb-mesh's repo, bridge and injector (devenv/mesh.ts), given only what startMeshComponents
// reads of a DevEnvironment: the plane, the gateway and a folder. Writes $WORK/state.json once
// both run; stops on SIGTERM or SIGINT.
// Environment: GATEWAY (the pod bridge's address), WORK (run.ts's folder).
import { mkdtempSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startControlPlane } from '../controlplane.js';
import type { DevEnvironment } from '../environment.js';
import { startMeshComponents } from '../mesh.js';

/** What run.ts reads once the plane and the mesh are up. */
export interface ControlPlaneState {
  kubeconfig: string;
  caFile: string;
  repoUrl: string;
}

const gateway = process.env.GATEWAY;
const work = process.env.WORK;
if (!gateway || !work) {
  console.error('control-plane.js is started by devenv/real-kubelet/run.js, which sets GATEWAY and WORK');
  process.exit(2);
}
const progress = (message: string) => console.error(`    ${message}`);
const plane = await startControlPlane({ onProgress: progress, extraServingAddresses: [gateway] });
const dir = mkdtempSync(join(work, 'mesh-'));
const mesh = await startMeshComponents({ plane, network: { gateway }, dir } as unknown as DevEnvironment, { onProgress: progress });
const state: ControlPlaneState = { kubeconfig: plane.kubeconfigPath, caFile: join(plane.dir, 'ca.crt'), repoUrl: mesh.repoUrl };
writeFileSync(join(work, 'state.json'), JSON.stringify(state));
const stop = async () => {
  await mesh.stop();
  await plane.stop();
  process.exit(0);
};
process.on('SIGTERM', () => void stop());
process.on('SIGINT', () => void stop());
// Signal handlers alone do not keep the event loop alive.
setInterval(() => undefined, 1 << 30);
