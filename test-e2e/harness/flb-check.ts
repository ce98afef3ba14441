// What `flb check -o json` prints (diagnostics/README.md), and its verdicts on a mesh in iptables
// mode where everything works: the chart's install and the dev environment's must both read so.
export interface CheckReport {
  results: { id: string; title: string; status: string; detail: string; hint?: string }[];
  failed: number;
}

export const GREEN_IN_IPTABLES_MODE: [string, string][] = [
  ['apiserver', 'pass'],
  ['native-sidecars', 'pass'],
  ['mesh-settings', 'pass'],
  ['webhook-config', 'pass'],
  ['webhook-answers', 'pass'],
  ['webhook-ca-bundle', 'pass'],
  ['repo', 'pass'],
  ['bridge-leader', 'pass'],
  ['bridge-sources', 'pass'],
  ['cni', 'skip'],
  ['sidecars', 'pass'],
];
