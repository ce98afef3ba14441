// The Consul source's start read per node: /v1/catalog/node-services/<node> and
// /v1/health/node/<node> for every node, put together into what /v1/health/service/<name> answers
// for each service (its instances, each with its node, and its node's checks and its own), so the
// same translation publishes the same service whichever way it was read.
//
// Which way is cheaper was measured against Consul v1.16.1 (a dev agent, the bridge benchmark's
// catalog: a passing check per instance; 8 reads at a time, on a loaded 2-core machine, Consul's
// CPU time from /proc): at 10,000 services with 100,000 instances on 100 nodes, one read per
// service cost Consul 6.0-7.1 s of CPU (156 MB of answers), two per node 1.5-3.5 s (109 MB), one
// per node and one /v1/health/state/any 2.9-3.1 s. Each instance costs Consul about half as much
// read per node (no node or node checks repeated per instance). Every check in one read was not
// kept: Consul writes that 45 MB answer on one core before its first byte, and beside the node
// reads on a loaded machine it passed the source's 10 s timeout; read per node, no answer grows
// with the datacenter, and each node's checks are read beside its services.
import { ConsulError } from './client.js';

export interface StartCounts {
  /** Nodes in /v1/catalog/nodes. */
  nodes: number;
  /** Services the source publishes (/v1/catalog/services after its include and exclude lists). */
  listed: number;
  /** Every service in /v1/catalog/services. */
  total: number;
}

/**
 * Read per node when its two reads a node are fewer than one per listed service, and the services
 * left out (read per node all the same) are at most half. A datacenter with as many nodes as
 * services is read per service, as is one whose nodes cannot be listed (a token's policy without
 * node:read hides them all).
 */
export function readPerNode({ nodes, listed, total }: StartCounts): boolean {
  return nodes > 0 && 2 * nodes < listed && listed * 2 >= total;
}

/** Node names from /v1/catalog/nodes; undefined when the answer is not a list of nodes. */
export function nodeNames(body: unknown): string[] | undefined {
  if (!Array.isArray(body)) return undefined;
  const names: string[] = [];
  for (const node of body) {
    const name = (node as { Node?: unknown } | null)?.Node;
    if (typeof name === 'string' && name !== '') names.push(name);
  }
  return names;
}

/** The fields of a check that the translation and the source's check bookkeeping read. */
interface Check {
  Node: string;
  CheckID: string;
  Status: unknown;
  ServiceID: string;
  ServiceName: string;
}

/** Checks from /v1/health/node/<node> (or /v1/health/state/any), by node and by service ID ('' for the node's own checks). */
export type ChecksByNode = Map<string, Map<string, Check[]>>;

export function checksByNode(body: unknown): ChecksByNode {
  if (!Array.isArray(body)) throw new ConsulError('not a list of checks');
  const byNode: ChecksByNode = new Map();
  for (const raw of body) {
    if (typeof raw !== 'object' || raw === null) continue;
    const { Node, CheckID, Status, ServiceID, ServiceName } = raw as Record<string, unknown>;
    if (typeof Node !== 'string' || typeof CheckID !== 'string') continue;
    const check: Check = {
      Node,
      CheckID,
      Status,
      ServiceID: typeof ServiceID === 'string' ? ServiceID : '',
      ServiceName: typeof ServiceName === 'string' ? ServiceName : '',
    };
    let node = byNode.get(Node);
    if (!node) byNode.set(Node, (node = new Map()));
    const list = node.get(check.ServiceID);
    if (list) list.push(check);
    else node.set(check.ServiceID, [check]);
  }
  return byNode;
}

/**
 * The fields of an instance that translate.ts reads (and nothing else does): the start holds every
 * instance until the last node is read, so it keeps these and lets the rest of Consul's answer go
 * (Proxy, Connect, the indexes...: at 100,000 instances the whole objects held the bridge's RSS
 * 30 s after the start at 366 MiB, over the 300 MiB goal, where per service it was 276).
 */
const TRANSLATED_FIELDS = ['ID', 'Service', 'Kind', 'Tags', 'Meta', 'TaggedAddresses', 'Address', 'Port', 'Weights'] as const;

function translatedFields(service: Record<string, unknown>): Record<string, unknown> {
  const kept: Record<string, unknown> = {};
  for (const field of TRANSLATED_FIELDS) if (service[field] !== undefined) kept[field] = service[field];
  return kept;
}

/**
 * The instances of the wanted services in one /v1/catalog/node-services/<node> answer, as entries
 * of /v1/health/service/<name> (Node, Service, Checks: the node's checks, then the instance's),
 * added to `into` by service name. A node gone since the node list answers a null node: nothing.
 */
export function addNodeServices(node: string, body: unknown, checks: ChecksByNode, wanted: ReadonlySet<string>, into: Map<string, unknown[]>): void {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new ConsulError(`/v1/catalog/node-services/${node}: not an object`);
  const { Node, Services } = body as Record<string, unknown>;
  if (Node === null) return;
  if (typeof Node !== 'object' || Array.isArray(Node) || !Array.isArray(Services))
    throw new ConsulError(`/v1/catalog/node-services/${node}: no Node object and Services list`);
  const own = checks.get(node);
  const nodeChecks = own?.get('') ?? [];
  for (const service of Services) {
    const name = (service as { Service?: unknown } | null)?.Service;
    if (typeof name !== 'string' || !wanted.has(name)) continue;
    const id = (service as { ID?: unknown }).ID;
    const instanceChecks = typeof id === 'string' && id !== '' ? (own?.get(id) ?? []) : [];
    const entry = { Node, Service: translatedFields(service as Record<string, unknown>), Checks: [...nodeChecks, ...instanceChecks] };
    const list = into.get(name);
    if (list) list.push(entry);
    else into.set(name, [entry]);
  }
}
