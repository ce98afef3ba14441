import { describe, expect, it } from '@jest/globals';
import { defaultCgroup } from '../bpf/loader.js';
import { createLogger } from '../common/log.js';
import { EbpfNode, unavailableAlias } from './ebpf.js';
import { EBPF_UNAVAILABLE_MARK } from './validate.js';

describe("the mark on an eBPF pod's lo when its node cannot run eBPF", () => {
  it('names the node and the reason, and starts with what the validation looks for', () => {
    expect(unavailableAlias('node-1', 'missing bpftool')).toBe(`${EBPF_UNAVAILABLE_MARK}node-1: missing bpftool`);
  });

  it('fits the 255 bytes the kernel keeps of an alias, cut between characters, never inside one', () => {
    for (const reason of ['x'.repeat(400), 'é'.repeat(200), `${'x'.repeat(181)}€€€€€`, '𝄞'.repeat(100)]) {
      const alias = unavailableAlias('node-1', reason);
      expect(Buffer.byteLength(alias)).toBeLessThanOrEqual(255);
      expect(alias.startsWith(EBPF_UNAVAILABLE_MARK)).toBe(true);
      expect(alias.endsWith('...')).toBe(true);
      // A cut inside a character would decode to U+FFFD.
      expect(alias).not.toContain('\uFFFD');
    }
  });
});

describe("the agent's cgroup auto (the chart's default)", () => {
  it("gives a node where the host's hierarchy is not where it looks a reason naming the host's path, which the pod's mark keeps whole", async () => {
    // Nothing is mounted at the host root given, so the check stops there: nothing is loaded.
    const node = new EbpfNode({ mesh: 'flbt-auto', cgroup: 'auto', hostRoot: '/nonexistent-host', log: createLogger('cni-ebpf-test', 'silent') });
    const verdict = await node.available();
    const real = defaultCgroup()!;
    const expected = `the host's cgroup v2 hierarchy (${real} on the host) at /nonexistent-host${real}: no such directory; mount the host's ${real} there, or name the cgroup`;
    expect(verdict).toEqual({ ok: false, reason: expect.stringContaining(expected) });
    expect(node.knownUnavailable()).toContain(expected);
    // A Kubernetes node name of 40 characters: the alias (255 bytes) keeps the host's path and where it looked.
    expect(unavailableAlias('n'.repeat(40), `missing ${expected}`)).toContain(`/nonexistent-host${real}: no such directory`);
  });
});
