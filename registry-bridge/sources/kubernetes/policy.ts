// A Service's load-balancing policy from its `flomesh.io/` annotations, validated by the contract.
// `flomesh.io/policy` holds a whole policy (YAML or JSON, the catalog's `policy` field); the
// shorter annotations set one part each and win over it. Any problem gives the default policy and
// a list of every problem (the Service gets an Event): a half-applied policy would surprise more
// than none, and the Service is never dropped for it.
import YAML from 'yaml';
import { checkDocument, ServicePolicySchema, type ServicePolicy } from '../../../common/contract/index.js';
import { parseDuration } from '../../../common/duration.js';

export const POLICY_ANNOTATIONS = {
  policy: 'flomesh.io/policy',
  loadBalancer: 'flomesh.io/load-balancer',
  hashOn: 'flomesh.io/hash-on',
  healthCheck: 'flomesh.io/health-check',
  retries: 'flomesh.io/retries',
  connectTimeout: 'flomesh.io/connect-timeout',
  locality: 'flomesh.io/locality',
  outlierDetection: 'flomesh.io/outlier-detection',
} as const;

export const DEFAULT_POLICY: ServicePolicy = ServicePolicySchema.parse({});

export interface PolicyResult {
  policy: ServicePolicy;
  /** Empty when every annotation was good. */
  problems: string[];
}

type Draft = Record<string, unknown>;

function structured(annotation: string, text: string, problems: string[]): Draft | undefined {
  try {
    const value: unknown = YAML.parse(text);
    if (typeof value === 'object' && value !== null && !Array.isArray(value)) return value as Draft;
    problems.push(`annotation ${annotation}: expected a YAML or JSON object`);
  } catch (error) {
    problems.push(`annotation ${annotation}: not YAML or JSON (${(error as Error).message.split('\n')[0]})`);
  }
  return undefined;
}

const section = (draft: Draft, key: string): Draft => {
  const current = draft[key];
  const out = typeof current === 'object' && current !== null && !Array.isArray(current) ? { ...(current as Draft) } : {};
  draft[key] = out;
  return out;
};

/** The policy for a Service's annotations; only `flomesh.io/` keys are read. */
export function policyFromAnnotations(annotations: Readonly<Record<string, string>>): PolicyResult {
  const problems: string[] = [];
  const a = POLICY_ANNOTATIONS;
  const draft: Draft = annotations[a.policy] !== undefined ? (structured(a.policy, annotations[a.policy]!, problems) ?? {}) : {};

  const algorithm = annotations[a.loadBalancer];
  if (algorithm !== undefined) section(draft, 'loadBalancer').algorithm = algorithm.trim();
  const hashOn = annotations[a.hashOn];
  if (hashOn !== undefined) {
    const match = /^(source-ip|header|cookie)(?::(.+))?$/.exec(hashOn.trim());
    if (!match) problems.push(`annotation ${a.hashOn}: expected source-ip, header:NAME or cookie:NAME, not ${JSON.stringify(hashOn)}`);
    else {
      const lb = section(draft, 'loadBalancer');
      lb.hash = { on: match[1], ...(match[2] ? { name: match[2] } : {}) };
      lb.algorithm ??= 'ring-hash';
    }
  }
  const health = annotations[a.healthCheck];
  if (health !== undefined) {
    const short = /^(tcp|http)(?::(\/\S*))?$/.exec(health.trim());
    if (short) draft.healthCheck = { protocol: short[1], ...(short[2] ? { path: short[2] } : {}) };
    else {
      const value = structured(a.healthCheck, health, problems);
      if (value) draft.healthCheck = value;
    }
  }
  const retries = annotations[a.retries];
  if (retries !== undefined) {
    if (/^\d+$/.test(retries.trim())) section(draft, 'retries').attempts = Number(retries.trim());
    else {
      const value = structured(a.retries, retries, problems);
      if (value) draft.retries = value;
    }
  }
  const timeout = annotations[a.connectTimeout];
  if (timeout !== undefined) {
    try {
      section(draft, 'connect').timeoutMs = parseDuration(timeout.trim());
    } catch {
      problems.push(`annotation ${a.connectTimeout}: expected a duration such as 500ms or 2s, not ${JSON.stringify(timeout)}`);
    }
  }
  const locality = annotations[a.locality];
  if (locality !== undefined) section(draft, 'locality').prefer = locality.trim();
  const outlier = annotations[a.outlierDetection];
  if (outlier !== undefined) {
    if (outlier.trim() === 'on' || outlier.trim() === 'true') draft.outlierDetection = {};
    else if (outlier.trim() !== 'off' && outlier.trim() !== 'false') {
      const value = structured(a.outlierDetection, outlier, problems);
      if (value) draft.outlierDetection = value;
    }
  }

  const checked = checkDocument(ServicePolicySchema, draft);
  if (!checked.ok) for (const issue of checked.issues) problems.push(`policy ${issue.field}: ${issue.message}`);
  if (problems.length > 0) return { policy: DEFAULT_POLICY, problems };
  return { policy: checked.ok ? checked.value : DEFAULT_POLICY, problems };
}
