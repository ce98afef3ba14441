// The AdmissionReview shell around injectPod: parse, look up the namespace, inject, answer. It
// never throws for bad input: garbage gets a 400 with a JSON error, a bad pod an admission answer
// that says what is wrong.
import type { V1Namespace, V1Pod } from '@kubernetes/client-node';
import { z } from 'zod';
import { issuesOf } from '../common/contract/validate.js';
import { injectPod, type InjectionResult, type InjectorSettings } from './inject.js';
import { rememberJson } from './json-text.js';
import { patchBase64 } from './patch.js';

const AdmissionReviewSchema = z.object({
  apiVersion: z.literal('admission.k8s.io/v1', { message: 'only admission.k8s.io/v1 AdmissionReviews are supported' }),
  kind: z.literal('AdmissionReview'),
  request: z.object({
    uid: z.string().min(1),
    kind: z.object({ group: z.string(), version: z.string(), kind: z.string() }),
    operation: z.string().optional(),
    namespace: z.string().optional(),
    name: z.string().optional(),
    dryRun: z.boolean().optional(),
    // PodShape checks the pod itself; a record schema here would copy every key of it first.
    object: z
      .custom<Record<string, unknown> | null>((v) => v === null || (typeof v === 'object' && !Array.isArray(v)), 'expected an object or null')
      .optional(),
  }),
});

export interface NamespaceLookup {
  /** The namespace from a cache, or from the API when the cache does not have it yet; undefined if unknown. */
  get(name: string): Promise<V1Namespace | undefined> | V1Namespace | undefined;
}

export interface AdmissionOutcome {
  /** HTTP status for the reply; 200 for every well-formed review, whatever the verdict. */
  status: number;
  body: unknown;
  /** For events and metrics; absent for malformed requests. */
  review?: { uid: string; namespace: string; dryRun: boolean; pod?: V1Pod; result?: InjectionResult };
}

export function badRequest(message: string): AdmissionOutcome {
  return { status: 400, body: { error: message } };
}

/** The server's path from a request body's bytes to an outcome: bytes that are not JSON get a 400 too. */
export function reviewBody(body: Buffer, namespaces: NamespaceLookup, settings: InjectorSettings): Promise<AdmissionOutcome> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch (error) {
    return Promise.resolve(badRequest(`malformed request body: ${(error as Error).message}`));
  }
  return review(parsed, namespaces, settings);
}

export async function review(body: unknown, namespaces: NamespaceLookup, settings: InjectorSettings): Promise<AdmissionOutcome> {
  const parsed = AdmissionReviewSchema.safeParse(body);
  if (!parsed.success) {
    return badRequest(
      `not an admission.k8s.io/v1 AdmissionReview: ${issuesOf(parsed.error)
        .map((i) => `${i.field}: ${i.message}`)
        .join('; ')}`,
    );
  }
  const request = parsed.data.request;
  const reply = (response: Record<string, unknown>) => ({
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    response: { uid: request.uid, ...response },
  });
  const dryRun = request.dryRun === true;
  const namespace = request.namespace ?? '';

  const { group, version, kind } = request.kind;
  if (group !== '' || version !== 'v1' || kind !== 'Pod') {
    // Never block what we do not handle; say so, the webhook's rules are probably too wide.
    return {
      status: 200,
      body: reply({ allowed: true, warnings: [`flb-mesh injector handles core/v1 Pods only, not ${group || 'core'}/${version} ${kind}; nothing was changed`] }),
      review: { uid: request.uid, namespace, dryRun },
    };
  }
  if (request.operation !== undefined && request.operation !== 'CREATE') {
    return { status: 200, body: reply({ allowed: true }), review: { uid: request.uid, namespace, dryRun } };
  }
  const podCheck = PodShape.safeParse(request.object);
  if (!podCheck.success) {
    const problems = issuesOf(podCheck.error)
      .map((i) => `${i.field}: ${i.message}`)
      .join('; ');
    return {
      status: 200,
      body: reply({ allowed: false, status: { code: 400, reason: 'BadRequest', message: `flb-mesh injector: the pod is malformed: ${problems}` } }),
      review: { uid: request.uid, namespace, dryRun },
    };
  }
  const pod = request.object as V1Pod;
  // The apiserver puts the namespace on the request; the object may omit it. The patch must apply
  // to the object as sent, so the pod itself is not changed: the namespace goes beside it.
  const podWithNamespace: V1Pod = pod.metadata?.namespace || !namespace ? pod : { ...pod, metadata: { ...pod.metadata, namespace } };
  let ns: V1Namespace | undefined;
  try {
    ns = await namespaces.get(namespace);
  } catch {
    ns = undefined;
  }
  let result: InjectionResult;
  try {
    result = injectPod(pod, ns ?? { metadata: { name: namespace } }, settings);
  } catch (error) {
    // A bug of ours must not crash the server; the pod is refused with what went wrong.
    result = {
      action: 'deny',
      message: `could not process the pod (${error instanceof Error ? error.message : String(error)}); please report this`,
      problem: 'the injector failed on it (please report this)',
      invalid: [],
    };
  }
  const outcome = { uid: request.uid, namespace, dryRun, pod: podWithNamespace, result };
  switch (result.action) {
    case 'inject': {
      const patch = patchBase64(result.patch);
      const warnings = result.warnings.length ? { warnings: result.warnings } : {};
      // The base64 patch is most of the answer and never needs escaping: the text is written around
      // it, as JSON.stringify would write it (response is the last key, patch and warnings its last).
      const head = JSON.stringify(reply({ allowed: true, patchType: 'JSONPatch' })).slice(0, -2);
      const text = `${head},"patch":"${patch}"${result.warnings.length ? `,"warnings":${JSON.stringify(result.warnings)}` : ''}}}`;
      return { status: 200, body: rememberJson(reply({ allowed: true, patchType: 'JSONPatch', patch, ...warnings }), text), review: outcome };
    }
    case 'skip':
      return { status: 200, body: reply({ allowed: true, ...(result.warnings.length ? { warnings: result.warnings } : {}) }), review: outcome };
    case 'deny':
      return {
        status: 200,
        body: reply({ allowed: false, status: { code: 400, reason: 'BadRequest', message: `flb-mesh injector: ${result.message}` } }),
        review: outcome,
      };
  }
}

const ProbeShape = z
  .object({
    httpGet: z.object({ port: z.union([z.number(), z.string()]), path: z.string().optional() }).optional(),
    tcpSocket: z.object({ port: z.union([z.number(), z.string()]) }).optional(),
    grpc: z.object({ port: z.number() }).optional(),
  })
  .optional();
const ContainerShape = z.object({
  name: z.string(),
  ports: z.array(z.object({ name: z.string().optional(), containerPort: z.number() })).optional(),
  livenessProbe: ProbeShape,
  readinessProbe: ProbeShape,
  startupProbe: ProbeShape,
});

/** Just enough of a Pod for injection to be safe; the apiserver validates the rest after us. */
const PodShape = z.object({
  metadata: z
    .object({
      name: z.string().optional(),
      namespace: z.string().optional(),
      labels: z.record(z.string(), z.string()).optional(),
      annotations: z.record(z.string(), z.string()).optional(),
    })
    .optional(),
  spec: z.object({
    containers: z.array(ContainerShape).min(1, 'a pod needs at least one container'),
    initContainers: z.array(ContainerShape).optional(),
    volumes: z.array(z.object({ name: z.string() })).optional(),
    hostNetwork: z.boolean().optional(),
  }),
});
