// Cornerstone3D 5.14's @cornerstonejs/dicom-image-loader in Node (native ESM), loading
// WADO-RS frames as a viewer does: core.init(), loader init({maxWebWorkers}), the
// series metadata from one .../metadata request, then imageLoader.loadAndCacheImages.
//
//   node loader.mjs <maxWebWorkers>
//
// One JSON command a line on stdin, one answer a line on stdout, prefixed "@@":
//   {"cmd": "series", "name", "base", "study", "series", "sops", "relabel"}
//       registers the series' metadata; sops: the instances to load, in order
//   {"cmd": "load", "name", "dump"?} -> {"seconds", "cpu", "requests", "type", ...}
//       cache purged first; cpu: this process's user+system seconds (its worker
//       threads included); dump: a path to write every frame's pixels to, in order
//   {"cmd": "quit"}
import { closeSync, copyFileSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import os from 'node:os';
import XHR from 'xhr2';
import Worker from 'web-worker';

// -- the browser a viewer runs in, as much of it as the loader touches --------------------
globalThis.navigator ??= {};
Object.assign(globalThis.navigator, {
  hardwareConcurrency: os.availableParallelism(),
  platform: 'Linux x86_64',
  userAgent: `Node.js/${process.version}`,
  maxTouchPoints: 0,
});
let requests = 0;
const relabelled = new Map(); // imageId -> the transfer syntax its frames really are in
globalThis.XMLHttpRequest = class extends XHR {
  send(body) {
    requests += 1;
    return super.send(body);
  }
};
globalThis.Worker = Worker; // worker_threads: their CPU time is this process's
globalThis.document = { createElement: () => ({ getContext: () => null }) }; // no WebGL
globalThis.window = { setTimeout, clearTimeout };

// The codecs' .wasm files in one folder: init({wasmBasePath}) takes a single base path.
const here = dirname(fileURLToPath(import.meta.url));
const wasmDir = join(here, 'wasm');
mkdirSync(wasmDir, { recursive: true });
const require = createRequire(import.meta.url);
for (const spec of [
  '@cornerstonejs/codec-charls/decodewasm',
  '@cornerstonejs/codec-libjpeg-turbo-8bit/decodewasm',
  '@cornerstonejs/codec-openjpeg/decodewasm',
  '@cornerstonejs/codec-openjph/wasm',
]) {
  const file = require.resolve(spec);
  copyFileSync(file, join(wasmDir, basename(file)));
}

const core = await import('@cornerstonejs/core');
const dicomImageLoader = await import('@cornerstonejs/dicom-image-loader');
core.init();
dicomImageLoader.init({
  maxWebWorkers: Number(process.argv[2] || 2),
  wasmBasePath: wasmDir,
  // Orthanc 1.10 cannot send HTJ2K frames as stored (HTTP 500): for such a series ask
  // for explicit VR LE, which brings the same codestream labelled as uncompressed, and
  // put the real transfer syntax in the part's header (both are the loader's own hooks).
  beforeSend(xhr, imageId) {
    const syntax = relabelled.get(imageId);
    if (!syntax) return {};
    xhr.relabel = syntax;
    return { Accept: 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1' };
  },
  beforeProcessing(xhr) {
    return Promise.resolve(xhr.relabel ? relabel(xhr.response, xhr.relabel) : xhr.response);
  },
});

function relabel(body, syntax) {
  const bytes = new Uint8Array(body);
  const end = Buffer.from(bytes.buffer, 0, Math.min(bytes.length, 4096)).indexOf('\r\n\r\n');
  const head = Buffer.from(bytes.subarray(0, end)).toString('latin1');
  const fixed = Buffer.from(head.replace('transfer-syntax=1.2.840.10008.1.2.1', `transfer-syntax=${syntax}`), 'latin1');
  return Buffer.concat([fixed, bytes.subarray(end)]).buffer;
}

const series = new Map();

async function addSeries({ name, base, study, series: seriesUid, sops, relabel: syntax }) {
  const url = `${base}/studies/${study}/series/${seriesUid}`;
  const response = await fetch(`${url}/metadata`, { headers: { Accept: 'application/dicom+json' } });
  if (!response.ok) throw new Error(`${url}/metadata: HTTP ${response.status}`);
  const instances = await response.json();
  const imageId = (sop) => `wadors:${url}/instances/${sop}/frames/1`;
  for (const metadata of instances) {
    const id = imageId(metadata['00080018'].Value[0]);
    dicomImageLoader.wadors.metaDataManager.add(id, metadata);
    if (syntax) relabelled.set(id, syntax);
  }
  series.set(name, sops.map(imageId));
  return { instances: instances.length, frames: sops.length };
}

async function load({ name, dump }) {
  const imageIds = series.get(name);
  core.cache.purgeCache();
  const before = requests;
  const cpu = process.cpuUsage();
  const start = performance.now();
  const images = await Promise.all(core.imageLoader.loadAndCacheImages(imageIds));
  const seconds = (performance.now() - start) / 1000;
  const used = process.cpuUsage(cpu);
  const pixels = images[0].getPixelData();
  if (dump) {
    const fd = openSync(dump, 'w');
    for (const image of images) {
      const data = image.getPixelData();
      writeSync(fd, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    }
    closeSync(fd);
  }
  return {
    seconds,
    cpu: (used.user + used.system) / 1e6,
    requests: requests - before,
    images: images.length,
    type: pixels.constructor.name,
    rows: images[0].rows,
    columns: images[0].columns,
    preScale: images[0].preScale ?? null,
  };
}

const answer = (value) => process.stdout.write(`@@${JSON.stringify(value)}\n`);
answer({ ready: true, maxWebWorkers: Number(process.argv[2] || 2) });
for await (const line of createInterface({ input: process.stdin })) {
  const command = JSON.parse(line);
  try {
    if (command.cmd === 'quit') break;
    if (command.cmd === 'series') answer(await addSeries(command));
    else if (command.cmd === 'load') answer(await load(command));
    else throw new Error(`unknown command ${command.cmd}`);
  } catch (error) {
    answer({ error: String(error?.stack ?? error?.statusText ?? error) });
  }
}
process.exit(0);
