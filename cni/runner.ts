/*
 * `flb cni agent` running: the Kubernetes API client, the node agent on its socket, and the repair
 * loop. cni/cli.ts only parses flags into AgentRunOptions.
 */
import { CoreV1Api } from '@kubernetes/client-node';
import { loadKubeConfig } from '../common/kube.js';
import { ConditionLog, type Logger } from '../common/log.js';
import { startMetricsServer } from '../common/metrics.js';
import { CniAgent } from './agent.js';
import { EbpfNode } from './ebpf.js';
import { CniAgentMetrics } from './metrics.js';
import { repairPass, type RepairMode } from './repair.js';

export interface AgentRunOptions {
  socketPath: string;
  stateDir: string;
  kubeconfig?: string;
  /** The repair loop runs only with a node name and a mode other than off. */
  nodeName?: string;
  repair: RepairMode | 'off';
  repairIntervalMs: number;
  /** Where GET /metrics is served (plain HTTP); undefined: nowhere. */
  metricsListen?: { host: string; port: number };
  /** eBPF mode: the mesh whose programs the agent loads and registers pods with, and where they attach. */
  ebpf: { mesh: string; cgroup?: string; hostRoot?: string; bpffs?: string };
  log: Logger;
  repairLog: Logger;
}

export async function runCniAgent(options: AgentRunOptions): Promise<{ stop(): Promise<void> }> {
  // First: without an API the agent could only fail every pod's ADD, so it does not start.
  const core = loadKubeConfig(options.kubeconfig).makeApiClient(CoreV1Api);
  const metrics = new CniAgentMetrics();
  const ebpf = new EbpfNode({ ...options.ebpf, ...(options.nodeName ? { nodeName: options.nodeName } : {}), log: options.log.child({ mode: 'ebpf' }) });
  const agent = new CniAgent({
    ebpf,
    metrics,
    socketPath: options.socketPath,
    stateDir: options.stateDir,
    log: options.log,
    getPod: async (namespace, name) => {
      try {
        return await core.readNamespacedPod({ name, namespace });
      } catch (error) {
        if ((error as { code?: number }).code === 404) return undefined;
        throw error;
      }
    },
  });
  await agent.start();
  const metricsServer = options.metricsListen
    ? await startMetricsServer(metrics.registry, options.metricsListen, { what: "the CNI agent's metrics", flag: '--metrics-listen HOST:PORT' }).catch(
        async (error: unknown) => {
          await agent.stop();
          throw error;
        },
      )
    : undefined;
  const repair =
    options.repair !== 'off' && options.nodeName
      ? startRepairLoop({ ...options, core, mode: options.repair, nodeName: options.nodeName, metrics, ebpf })
      : undefined;
  if (options.repair !== 'off' && !options.nodeName) options.log.warn('no --node-name and no NODE_NAME: the repair loop is off');
  return {
    stop: async () => {
      repair?.stop();
      await metricsServer?.close();
      await agent.stop();
    },
  };
}

/**
 * A repair pass every interval. A pass that fails (the API away) is logged when that starts, as a
 * reminder once a minute, and when passes succeed again, not every interval with a stack.
 */
function startRepairLoop(options: {
  core: CoreV1Api;
  nodeName: string;
  mode: RepairMode;
  repairIntervalMs: number;
  repairLog: Logger;
  metrics: CniAgentMetrics;
  ebpf: EbpfNode;
}): { stop(): void } {
  const conditions = new ConditionLog(options.repairLog);
  let running = false;
  const pass = () => {
    if (running) return;
    running = true;
    const ebpfUnavailable = () => options.ebpf.knownUnavailable();
    repairPass({ core: options.core, nodeName: options.nodeName, mode: options.mode, log: options.repairLog, ebpfUnavailable })
      .then(
        (outcome) => {
          options.metrics.repairPass(outcome);
          conditions.clear('repair passes succeed again');
        },
        (error: unknown) => {
          options.metrics.repairPass('failed');
          conditions.report('repair-failing', 'repair pass failed; trying again every interval', { error });
        },
      )
      .finally(() => (running = false));
  };
  const timer = setInterval(pass, options.repairIntervalMs);
  pass();
  return { stop: () => clearInterval(timer) };
}
