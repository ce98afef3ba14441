// `node dist/devenv/images/main.js [sidecar|control-plane ...]`: builds flb-mesh's images from
// images/Dockerfile without a Docker engine (see builder.ts), each only if its inputs changed.
// Progress on stderr; the images, their ids and sizes on stdout. Exit 1 on a failure.
import { buildImages, IMAGES, megabytes, type ImageName } from './builder.js';

const wanted = process.argv.slice(2);
const unknown = wanted.filter((name) => !(name in IMAGES));
if (unknown.length || wanted.includes('--help')) {
  console.error(`usage: node dist/devenv/images/main.js [${Object.keys(IMAGES).join('|')} ...]  (default: all)`);
  process.exit(unknown.length ? 2 : 0);
}

const started = Date.now();
try {
  const images = await buildImages({
    ...(wanted.length ? { images: wanted as ImageName[] } : {}),
    onProgress: (message) => console.error(`    ${message}`),
  });
  for (const image of images) {
    process.stdout.write(
      `${image.reference}\t${image.id.slice(0, 12)}\t${megabytes(image.sizeBytes)}\t${image.built ? `built in ${Math.round(image.seconds)} s` : 'up to date'}\n`,
    );
  }
  console.error(`    done in ${Math.round((Date.now() - started) / 1000)} s`);
} catch (error) {
  console.error(`\nbuilding the images failed: ${(error as Error).message}`);
  process.exitCode = 1;
}
