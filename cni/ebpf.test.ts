import { describe, expect, it } from '@jest/globals';
import { unavailableAlias } from './ebpf.js';
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
