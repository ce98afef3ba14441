import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BASES, buildImages, ImageStore } from './builder.js';
import { changedFiles, hashInputs, MissingInputError, parseDockerfile, parseIgnoreFile, UnsupportedDockerfileError } from './dockerfile.js';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '../..');

describe('what a Dockerfile reads from its context', () => {
  it('takes COPY and ADD sources but not what a stage copies from another; FROM bases with ARG defaults, not stage names', () => {
    const parsed = parseDockerfile(
      [
        '# syntax=docker/dockerfile:1',
        'ARG BASE=localhost/base:1',
        'ARG BUILD="localhost/build:2"',
        'FROM ${BUILD} AS build',
        'COPY package.json \\',
        '  # a comment inside a continuation',
        '  package-lock.json ./',
        'COPY --chown=1:1 ["src/", "/src/"]',
        'ADD vendor/lib.tar.gz /opt/',
        'RUN make',
        'FROM $BASE',
        'COPY --from=build /out /',
        'FROM build AS again',
        'COPY . .',
      ].join('\n'),
      'Dockerfile',
    );
    expect(parsed.bases).toEqual([
      { line: 4, reference: 'localhost/build:2' },
      { line: 11, reference: 'localhost/base:1' },
    ]);
    expect(parsed.sources).toEqual([
      { line: 5, path: 'package.json' },
      { line: 5, path: 'package-lock.json' },
      { line: 8, path: 'src' },
      { line: 9, path: 'vendor/lib.tar.gz' },
      { line: 14, path: '' },
    ]);
  });

  it('refuses what its hash would get wrong, naming the file and line', () => {
    const refused = (text: string) => {
      try {
        parseDockerfile(`FROM localhost/base:1\n${text}\n`, 'images/Dockerfile');
        return 'accepted';
      } catch (error) {
        return `${(error as Error).name}: ${(error as Error).message}`;
      }
    };
    expect(refused('COPY $DIR /x')).toBe(
      'UnsupportedDockerfileError: images/Dockerfile:2: $DIR: variables and wildcards in a source are not understood by the input hash',
    );
    expect(refused('COPY src/*.ts /x/')).toMatch(/^UnsupportedDockerfileError: images\/Dockerfile:2: src\/\*\.ts: variables and wildcards/);
    expect(refused('ADD https://example.com/a.tgz /x')).toMatch(/images\/Dockerfile:2: ADD from a URL \(https:\/\/example.com\/a.tgz\)/);
    expect(refused('COPY ../secret /x')).toBe('UnsupportedDockerfileError: images/Dockerfile:2: ../secret is outside the build context');
    expect(refused('COPY <<EOF /x\nhello\nEOF')).toMatch(/images\/Dockerfile:2: heredocs/);
    expect(refused('FROM ${NOPE}')).toBe('UnsupportedDockerfileError: images/Dockerfile:2: $NOPE has no default in an ARG before the first FROM');
    expect(() => parseIgnoreFile('**/node_modules\nsrc/*.ts\n', 'x.dockerignore')).toThrow(
      new UnsupportedDockerfileError("x.dockerignore:2: 'src/*.ts': the image builder understands only **/NAME patterns"),
    );
  });

  it('names the base images this repository builds, and the builder makes each of them', () => {
    const parsed = parseDockerfile(readFileSync(join(repoRoot, 'images/Dockerfile'), 'utf8'), 'images/Dockerfile');
    expect(parsed.bases.map(({ reference }) => reference).filter((reference) => !(reference in BASES))).toEqual([]);
    expect(new Set(parsed.bases.map(({ reference }) => reference)).size).toBe(Object.keys(BASES).length);
  });
});

describe('the input hash', () => {
  let context: string;
  const write = (path: string, content: string) => {
    mkdirSync(dirname(join(context, path)), { recursive: true });
    writeFileSync(join(context, path), content);
  };
  const inputs = () => parseDockerfile('FROM localhost/base:1\nCOPY package.json ./\nCOPY . .\n', 'Dockerfile');
  const ignore = parseIgnoreFile('**/build\n**/*.test.ts\n**/node_modules\n', '.dockerignore');
  const hash = () => hashInputs(context, inputs(), ignore, 'Dockerfile');

  beforeEach(() => {
    context = mkdtempSync(join(tmpdir(), 'flb-dockerfile-'));
    write('package.json', '{}');
    write('src/a.ts', 'a');
    write('src/b.ts', 'b');
  });
  afterEach(() => rmSync(context, { recursive: true, force: true }));

  it('changes with a file copied (content, name, executable bit, a new file) and not with an ignored one', () => {
    const before = hash();
    expect(Object.keys(before.files)).toEqual(['package.json', 'src/a.ts', 'src/b.ts']);
    write('src/build/out.js', 'x');
    write('src/a.test.ts', 'x');
    write('node_modules/x/index.js', 'x');
    expect(hash()).toEqual(before);

    write('src/a.ts', 'a2');
    const edited = hash();
    expect(edited.hash).not.toBe(before.hash);
    expect(changedFiles(before.files, edited.files)).toEqual(['src/a.ts']);
    chmodSync(join(context, 'src/b.ts'), 0o755);
    expect(changedFiles(edited.files, hash().files)).toEqual(['src/b.ts']);
    write('src/c.ts', 'c');
    symlinkSync('a.ts', join(context, 'src/link.ts'));
    expect(changedFiles(edited.files, hash().files)).toEqual(['src/b.ts', 'src/c.ts', 'src/link.ts']);
  });

  it('fails before any build when a copied input is missing, naming every one and its line', () => {
    rmSync(join(context, 'package.json'));
    const text = 'FROM localhost/base:1\nCOPY package.json package-lock.json ./\nCOPY src/ src/\nCOPY tsconfig.json ./\n';
    expect(() => hashInputs(context, parseDockerfile(text, 'images/Dockerfile'), ignore, 'images/Dockerfile')).toThrow(
      new MissingInputError(
        `images/Dockerfile copies what the build context ${context} does not have: package.json (line 2), package-lock.json (line 2), tsconfig.json (line 4)`,
      ),
    );
  });
});

describe('buildImages refuses bad input before building anything', () => {
  let context: string;
  beforeEach(() => {
    context = mkdtempSync(join(tmpdir(), 'flb-build-input-'));
  });
  afterEach(() => rmSync(context, { recursive: true, force: true }));
  // The store is never reached: each check comes before the first buildah or mmdebstrap call.
  const store = new ImageStore(join(tmpdir(), 'flb-never-made'));
  const failure = (dockerfile?: string, ignore?: string) => {
    if (dockerfile !== undefined) writeFileSync(join(context, 'Dockerfile'), dockerfile);
    if (ignore !== undefined) writeFileSync(join(context, 'Dockerfile.dockerignore'), ignore);
    return buildImages({ context, dockerfile: join(context, 'Dockerfile'), store }).then(
      () => 'built',
      (error: Error) => `${error.name}: ${error.message}`,
    );
  };

  it('a missing Dockerfile or ignore file, by path', async () => {
    expect(await failure()).toBe(`MissingInputError: the image build needs ${context}/Dockerfile, which does not exist`);
    expect(await failure('FROM localhost/flb-mesh-base:trixie-nodejs20.19.2\n')).toBe(
      `MissingInputError: the image build needs ${context}/Dockerfile.dockerignore, which does not exist`,
    );
  });

  it('a missing source, and a base it cannot make (nothing is pulled)', async () => {
    expect(await failure('FROM localhost/flb-mesh-base:trixie-nodejs20.19.2\nCOPY app/ /app/\n', '**/build\n')).toBe(
      `MissingInputError: ${context}/Dockerfile copies what the build context ${context} does not have: app (line 2)`,
    );
    expect(await failure('FROM debian:trixie-slim\n', '')).toBe(
      `Error: ${context}/Dockerfile builds FROM debian:trixie-slim (line 1), which this builder cannot make (it makes ${Object.keys(BASES).join(', ')}; nothing is pulled)`,
    );
    expect(existsSync(store.root)).toBe(false);
  });
});
