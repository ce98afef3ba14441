import { KubeConfig, VersionApi } from '@kubernetes/client-node';

/** A kubeconfig from --kubeconfig, else $KUBECONFIG / ~/.kube/config, else the in-cluster service account. */
export function loadKubeConfig(path?: string): KubeConfig {
  const kc = new KubeConfig();
  if (path) kc.loadFromFile(path);
  else kc.loadFromDefault();
  return kc;
}

/** Native sidecars (init containers with restartPolicy Always) are on by default from Kubernetes 1.29. */
export async function supportsNativeSidecars(kc: KubeConfig): Promise<boolean> {
  const version = await kc.makeApiClient(VersionApi).getCode();
  const major = Number.parseInt(version.major, 10);
  const minor = Number.parseInt(version.minor, 10);
  return major > 1 || (major === 1 && minor >= 29);
}
