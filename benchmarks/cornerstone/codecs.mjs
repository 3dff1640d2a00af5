// Cornerstone3D's codecs, called the way @cornerstonejs/dicom-image-loader 5.14 calls
// them (dist/esm/shared/decoders/decode*.js), one frame at a time on this thread.
//
//   node codecs.mjs cases.json
//
// cases.json: [{name, codec, file, bitsAllocated}], file holding one frame's codestream.
// Then one JSON command a line on stdin, one answer a line on stdout, prefixed "@@":
//   {"cmd": "time", "name": ..., "budget": s} -> {"ms": ms per frame, "calls": n}
//   {"cmd": "dump", "name": ..., "path": p}    -> {"bytes": n, "type": ...} (pixels to p)
//   {"cmd": "quit"}
import { readFileSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import charlsFactory from '@cornerstonejs/codec-charls/decodewasmjs';
import libjpegTurboFactory from '@cornerstonejs/codec-libjpeg-turbo-8bit/decodewasmjs';
import openJpegFactory from '@cornerstonejs/codec-openjpeg/decodewasmjs';
import openJphFactory from '@cornerstonejs/codec-openjph/wasmjs';
import { Decoder as LosslessDecoder } from '@cornerstonejs/jpeg-lossless-decoder-js';

// Each wasm codec: one decoder, reused (HTJ2K: a new one per frame, as the loader does).
async function wasmCodec(factory, className, { perFrame = false, decodeCall = 'decode' } = {}) {
  const module = await factory();
  const shared = perFrame ? null : new module[className]();
  return (frame) => {
    const decoder = shared ?? new module[className]();
    decoder.getEncodedBuffer(frame.length).set(frame);
    decoder[decodeCall](...(decodeCall === 'decodeSubResolution' ? [0] : []));
    decoder.getFrameInfo();
    // The loader copies the decoded samples out of wasm memory before handing them on.
    const pixels = decoder.getDecodedBuffer().slice();
    if (perFrame) decoder.delete();
    return pixels;
  };
}

const makers = {
  jpegls: () => wasmCodec(charlsFactory, 'JpegLSDecoder'),
  jpeg8: () => wasmCodec(libjpegTurboFactory, 'JPEGDecoder'),
  j2k: () => wasmCodec(openJpegFactory, 'J2KDecoder'),
  htj2k: () =>
    wasmCodec(openJphFactory, 'HTJ2KDecoder', { perFrame: true, decodeCall: 'decodeSubResolution' }),
  // Pure JavaScript; a new decoder per frame, as decodeJPEGLossless.js does.
  jpeglossless: async () => (frame, bitsAllocated) =>
    new LosslessDecoder().decode(frame.buffer, frame.byteOffset, frame.length, bitsAllocated <= 8 ? 1 : 2),
};

const cases = new Map();
const codecs = new Map();
for (const c of JSON.parse(readFileSync(process.argv[2], 'utf8'))) {
  if (!codecs.has(c.codec)) codecs.set(c.codec, await makers[c.codec]());
  const decode = codecs.get(c.codec);
  const frame = new Uint8Array(readFileSync(c.file));
  cases.set(c.name, () => decode(frame, c.bitsAllocated));
}

function time(decode, budget) {
  let calls = 0;
  const start = performance.now();
  let spent = 0;
  do {
    decode();
    calls += 1;
    spent = performance.now() - start;
  } while (spent < budget * 1000);
  return { ms: spent / calls, calls };
}

const answer = (value) => process.stdout.write(`@@${JSON.stringify(value)}\n`);
answer({ ready: cases.size });
for await (const line of createInterface({ input: process.stdin })) {
  const command = JSON.parse(line);
  try {
    if (command.cmd === 'quit') break;
    const decode = cases.get(command.name);
    if (command.cmd === 'time') {
      answer(time(decode, command.budget));
    } else if (command.cmd === 'dump') {
      const pixels = decode();
      writeFileSync(command.path, new Uint8Array(pixels.buffer, pixels.byteOffset, pixels.byteLength));
      answer({ bytes: pixels.byteLength, type: pixels.constructor.name });
    } else {
      throw new Error(`unknown command ${command.cmd}`);
    }
  } catch (error) {
    answer({ error: String(error?.stack ?? error) });
  }
}
process.exit(0);
