// Summarises a V8 .cpuprofile (node --cpu-prof) into where the time went: the functions with the
// most self time, self time by area (our code, Node's core, each npm package, native code, GC),
// and the inclusive time of our own functions. Shares are of the busy time: samples of "(idle)"
// (the event loop waiting in epoll) are left out, so the shares add up to what the CPU did.
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface ProfileSummary {
  /** Sampled wall time, and the part of it that was not idle. */
  wallMs: number;
  busyMs: number;
  topSelf: { function: string; where: string; selfMs: number; selfPercent: number }[];
  byArea: { area: string; selfMs: number; selfPercent: number }[];
  oursInclusive: { function: string; where: string; totalMs: number; totalPercent: number }[];
}

/** `file:///work/main/dist/sidecar/proxy/splice.js` -> `sidecar/proxy/splice.js`. */
function shortUrl(url: string): string {
  const dist = url.indexOf('/dist/');
  if (dist >= 0) return url.slice(dist + 6);
  const modules = url.lastIndexOf('/node_modules/');
  if (modules >= 0) return url.slice(modules + 14);
  return url;
}

function areaOf(frame: ProfileNode['callFrame']): string {
  const { url, functionName } = frame;
  if (!url) {
    if (functionName === '(garbage collector)') return 'V8 garbage collector';
    if (functionName === '(program)') return 'V8/libuv outside JavaScript (program)';
    if (functionName === '(idle)') return 'idle';
    return 'native functions called from JavaScript (syscalls, bindings)';
  }
  if (url.startsWith('node:'))
    return `Node core: ${
      url
        .slice(5)
        .replace(/^internal\//, '')
        .split('/')[0]
    }`;
  const modules = url.lastIndexOf('/node_modules/');
  if (modules >= 0) {
    const rest = url.slice(modules + 14).split('/');
    return `npm: ${rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]}`;
  }
  const dist = url.indexOf('/dist/');
  if (dist >= 0) {
    const path = url.slice(dist + 6).split('/');
    return path.length > 1 ? `flb: ${path.slice(0, -1).join('/')}` : `flb: ${path[0]} (a bundle: ours and npm packages)`;
  }
  return url;
}

const isOurs = (url: string) => url.includes('/dist/') && !url.includes('/node_modules/');

/**
 * `window` (CLOCK_MONOTONIC microseconds, the clock V8 stamps samples with) keeps only the samples
 * taken under load; start-up would otherwise show as module compilation.
 */
export function summariseProfile(file: string, top = 15, window?: { fromUs: number; toUs: number }): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  const key = (n: ProfileNode) => `${n.callFrame.functionName || '(anonymous)'}\0${shortUrl(n.callFrame.url)}:${n.callFrame.lineNumber + 1}`;

  const self = new Map<string, number>();
  const area = new Map<string, number>();
  const inclusive = new Map<string, number>();
  let wall = 0;
  let idle = 0;
  let at = profile.startTime;
  // As DevTools counts: a sample stands for the time until the next one.
  for (let i = 0; i < profile.samples.length; i++) {
    at += profile.timeDeltas[i] ?? 0;
    if (window && (at < window.fromUs || at > window.toUs)) continue;
    const dt = (profile.timeDeltas[i + 1] ?? 0) / 1000;
    const node = byId.get(profile.samples[i]!);
    if (!node || dt < 0) continue;
    wall += dt;
    if (node.callFrame.functionName === '(idle)') {
      idle += dt;
      continue;
    }
    const k = key(node);
    self.set(k, (self.get(k) ?? 0) + dt);
    const a = areaOf(node.callFrame);
    area.set(a, (area.get(a) ?? 0) + dt);
    const seen = new Set<string>();
    for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
      const n = byId.get(id)!;
      if (!isOurs(n.callFrame.url)) continue;
      const ik = key(n);
      if (seen.has(ik)) continue;
      seen.add(ik);
      inclusive.set(ik, (inclusive.get(ik) ?? 0) + dt);
    }
  }
  if (window && wall === 0) throw new Error(`${file}: no sample in the window given; are the profile's timestamps CLOCK_MONOTONIC?`);
  const busy = wall - idle;
  const pct = (ms: number) => (busy > 0 ? (100 * ms) / busy : 0);
  const split = (k: string) => {
    const [fn, where] = k.split('\0') as [string, string];
    return { function: fn, where };
  };
  return {
    wallMs: wall,
    busyMs: busy,
    topSelf: [...self.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([k, ms]) => ({ ...split(k), selfMs: ms, selfPercent: pct(ms) })),
    byArea: [...area.entries()].sort((a, b) => b[1] - a[1]).map(([name, ms]) => ({ area: name, selfMs: ms, selfPercent: pct(ms) })),
    oursInclusive: [...inclusive.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([k, ms]) => ({ ...split(k), totalMs: ms, totalPercent: pct(ms) })),
  };
}
