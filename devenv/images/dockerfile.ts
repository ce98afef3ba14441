// What a Dockerfile reads from its build context, for the image cache: the sources of its COPY and
// ADD instructions (those not copying from another stage), less what the ignore file leaves out,
// hashed file by file. The builder rebuilds an image only when this hash (with the Dockerfile, the
// ignore file and the base images) changes, and refuses to start a build whose inputs are missing.
//
// Only the forms our own Dockerfile uses are understood; anything else (variables or wildcards in
// a source, ADD from a URL, heredocs) is refused by name rather than hashed wrongly, since a file
// the hash missed would let a stale image pass for a fresh one.
import { createHash } from 'node:crypto';
import { lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join, normalize, sep } from 'node:path';

export interface DockerfileInputs {
  /** Context-relative paths the Dockerfile copies, with the line that copies each. */
  sources: { line: number; path: string }[];
  /** Images named by FROM that are not stages of the same file (ARG defaults resolved). */
  bases: { line: number; reference: string }[];
}

export class MissingInputError extends Error {
  override name = 'MissingInputError';
}

export class UnsupportedDockerfileError extends Error {
  override name = 'UnsupportedDockerfileError';
}

interface Instruction {
  line: number;
  keyword: string;
  rest: string;
}

/** Instructions with their continuation lines joined; comments and blank lines dropped (as Docker does inside a continuation too). */
function instructions(text: string): Instruction[] {
  const result: Instruction[] = [];
  let pending: Instruction | undefined;
  text.split('\n').forEach((raw, index) => {
    const line = raw.replace(/\r$/, '');
    if (/^\s*#/.test(line) || (/^\s*$/.test(line) && !pending)) return;
    const continues = /\\\s*$/.test(line);
    const body = continues ? line.replace(/\\\s*$/, '') : line;
    if (pending) pending.rest += ` ${body.trim()}`;
    else {
      const match = /^\s*(\S+)\s*(.*)$/.exec(body)!;
      pending = { line: index + 1, keyword: match[1]!.toUpperCase(), rest: match[2]! };
    }
    if (!continues) {
      result.push(pending);
      pending = undefined;
    }
  });
  if (pending) result.push(pending);
  return result;
}

/** `$NAME` and `${NAME}` from the ARGs declared before the first FROM. */
function substitute(value: string, args: Map<string, string>, where: string): string {
  return value.replace(/\$\{(\w+)\}|\$(\w+)/g, (_, braced: string | undefined, bare: string | undefined) => {
    const name = (braced ?? bare)!;
    const resolved = args.get(name);
    if (resolved === undefined) throw new UnsupportedDockerfileError(`${where}: $${name} has no default in an ARG before the first FROM`);
    return resolved;
  });
}

export function parseDockerfile(text: string, file: string): DockerfileInputs {
  const globalArgs = new Map<string, string>();
  const stages = new Set<string>();
  const sources: DockerfileInputs['sources'] = [];
  const bases: DockerfileInputs['bases'] = [];
  let seenFrom = false;
  for (const { line, keyword, rest } of instructions(text)) {
    const where = `${file}:${line}`;
    if (/<<-?\w/.test(rest) && (keyword === 'RUN' || keyword === 'COPY' || keyword === 'ADD')) {
      throw new UnsupportedDockerfileError(`${where}: heredocs are not understood by the image builder's input hash`);
    }
    if (keyword === 'ARG' && !seenFrom) {
      const match = /^(\w+)(?:=(.*))?$/.exec(rest.trim());
      if (match?.[2] !== undefined) globalArgs.set(match[1]!, match[2].replace(/^"(.*)"$/, '$1'));
    } else if (keyword === 'FROM') {
      seenFrom = true;
      const words = rest
        .trim()
        .split(/\s+/)
        .filter((word) => !word.startsWith('--'));
      const image = substitute(words[0] ?? '', globalArgs, where);
      if (!stages.has(image) && image !== 'scratch') bases.push({ line, reference: image });
      if (words[1]?.toUpperCase() === 'AS' && words[2]) stages.add(words[2]);
    } else if (keyword === 'COPY' || keyword === 'ADD') {
      const flags = /^(?:--\S+\s+)*/.exec(rest.trim())![0];
      if (/--from=/.test(flags)) continue;
      const operands = rest.trim().slice(flags.length);
      const paths = operands.startsWith('[') ? (JSON.parse(operands) as string[]) : operands.split(/\s+/);
      if (paths.length < 2) throw new UnsupportedDockerfileError(`${where}: ${keyword} needs a source and a destination`);
      for (const source of paths.slice(0, -1)) {
        if (/^[a-z]+:\/\//i.test(source)) throw new UnsupportedDockerfileError(`${where}: ADD from a URL (${source}) cannot be hashed: download it in a RUN`);
        if (/[$*?[]/.test(source))
          throw new UnsupportedDockerfileError(`${where}: ${source}: variables and wildcards in a source are not understood by the input hash`);
        const path = normalize(source).replace(/\/$/, '');
        if (path === '..' || path.startsWith(`..${sep}`) || path.startsWith('/'))
          throw new UnsupportedDockerfileError(`${where}: ${source} is outside the build context`);
        sources.push({ line, path: path === '.' ? '' : path });
      }
    }
  }
  return { sources, bases };
}

/**
 * The patterns of a .dockerignore this builder understands: `**\/NAME`, where NAME (one path
 * segment, `*` allowed) excludes any file or folder of that name at any depth. Others are refused.
 */
export function parseIgnoreFile(text: string, file: string): RegExp[] {
  return text
    .split('\n')
    .map((line, index) => ({ pattern: line.trim(), line: index + 1 }))
    .filter(({ pattern }) => pattern !== '' && !pattern.startsWith('#'))
    .map(({ pattern, line }) => {
      const match = /^\*\*\/([^/!]+)$/.exec(pattern);
      if (!match) throw new UnsupportedDockerfileError(`${file}:${line}: '${pattern}': the image builder understands only **/NAME patterns`);
      const segment = match[1]!.replace(/[.+^${}()|[\]\\?]/g, '\\$&').replace(/\*/g, '[^/]*');
      return new RegExp(`^${segment}$`);
    });
}

export interface InputHash {
  hash: string;
  /** Each file hashed (context-relative) and its own hash. */
  files: Record<string, string>;
}

/** The files that differ between two input hashes: added, removed or changed. */
export function changedFiles(before: Record<string, string>, after: Record<string, string>): string[] {
  return [...new Set([...Object.keys(before), ...Object.keys(after)])].filter((path) => before[path] !== after[path]).sort();
}

/**
 * The hash of every file the Dockerfile copies from `context` (path, executable bit, content; a
 * symbolic link by its target), in a fixed order. Every missing source is named at once.
 */
export function hashInputs(context: string, inputs: DockerfileInputs, ignore: RegExp[], file: string): InputHash {
  const ignored = (path: string) => path.split('/').some((segment) => ignore.some((pattern) => pattern.test(segment)));
  const missing = inputs.sources.filter(({ path }) => !exists(join(context, path)));
  if (missing.length) {
    throw new MissingInputError(
      `${file} copies what the build context ${context} does not have: ${missing.map(({ line, path }) => `${path} (line ${line})`).join(', ')}`,
    );
  }
  const files = new Set<string>();
  const walk = (path: string) => {
    if (path !== '' && ignored(path)) return;
    const stat = lstatSync(join(context, path));
    if (stat.isDirectory()) for (const entry of readdirSync(join(context, path)).sort()) walk(path === '' ? entry : `${path}/${entry}`);
    else files.add(path);
  };
  for (const { path } of inputs.sources) walk(path);
  const digest = createHash('sha256');
  const hashes: Record<string, string> = {};
  for (const path of [...files].sort()) {
    const full = join(context, path);
    const stat = lstatSync(full);
    const content = stat.isSymbolicLink() ? `link:${readlinkSync(full)}` : readFileSync(full);
    hashes[path] = createHash('sha256')
      .update(stat.mode & 0o111 ? 'x' : '-')
      .update(content)
      .digest('hex');
    digest.update(`${path}\0${hashes[path]}\n`);
  }
  return { hash: digest.digest('hex'), files: hashes };
}

function exists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}
