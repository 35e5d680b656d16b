#!/usr/bin/env node
// ort_eval.js: run an ONNX classifier in ONNX Runtime (onnxruntime-node, CPU) over raw images.
//
//   node ort_eval.js MODEL.onnx IMAGES.raw N C H W OUT.f32 [--dtype uint8|float32] [--batch B] [--threads T]
//
// IMAGES.raw holds N images [C][H][W], uint8 (default) or little-endian float32 (--dtype float32,
// for a float-input export); they are fed to the model's only input in batches of B (default 256)
// and the model's only output (logits [N, classes], float32) is written to OUT.f32 in image order.
// Prints one JSON line: {"images", "classes", "seconds", "ort"}. ONNX Runtime is found through
// NODE_PATH or build/ort/node_modules (scripts/setup.sh installs it there); graph optimisations
// are ORT's defaults (QDQ groups fused into its integer kernels), threads 1 by default so that a
// run is repeatable on a shared machine.
'use strict';
const fs = require('fs');
const path = require('path');

function loadOrt() {
  const tries = [path.join(__dirname, '..', 'build', 'ort', 'node_modules', 'onnxruntime-node'), 'onnxruntime-node'];
  for (const t of tries) {
    try {
      return require(t);
    } catch (e) {
      if (e.code !== 'MODULE_NOT_FOUND') throw e;
    }
  }
  process.stderr.write('ort_eval.js: onnxruntime-node not found (run scripts/setup.sh)\n');
  process.exit(2);
}

function usage(msg) {
  process.stderr.write(`ort_eval.js: ${msg}\n` +
    'usage: node ort_eval.js MODEL.onnx IMAGES.raw N C H W OUT.f32 [--dtype uint8|float32] [--batch B] [--threads T]\n');
  process.exit(2);
}

async function main() {
  const args = process.argv.slice(2);
  const pos = [];
  const opt = { dtype: 'uint8', batch: 256, threads: 1 };
  for (let i = 0; i < args.length; i++) {
    if (args[i].startsWith('--')) {
      const k = args[i].slice(2);
      if (!(k in opt) || i + 1 >= args.length) usage(`bad flag ${args[i]}`);
      opt[k] = k === 'dtype' ? args[++i] : parseInt(args[++i], 10);
    } else {
      pos.push(args[i]);
    }
  }
  if (pos.length !== 7) usage('expected 7 arguments');
  const [model, imgPath, ns, cs, hs, ws, out] = pos;
  const [N, C, H, W] = [ns, cs, hs, ws].map((v) => parseInt(v, 10));
  if (!(N > 0 && C > 0 && H > 0 && W > 0)) usage('N, C, H, W must be positive');
  if (opt.dtype !== 'uint8' && opt.dtype !== 'float32') usage(`--dtype ${opt.dtype}`);
  const per = C * H * W;
  const bytes = opt.dtype === 'uint8' ? 1 : 4;
  const raw = fs.readFileSync(imgPath);
  if (raw.length < N * per * bytes) usage(`${imgPath}: ${raw.length} bytes, need ${N * per * bytes}`);

  const ort = loadOrt();
  const session = await ort.InferenceSession.create(model, {
    intraOpNumThreads: opt.threads, interOpNumThreads: 1, executionProviders: ['cpu'],
  });
  if (session.inputNames.length !== 1 || session.outputNames.length !== 1) usage('the model needs one input and one output');
  const [inName, outName] = [session.inputNames[0], session.outputNames[0]];
  const t0 = process.hrtime.bigint();
  let logits = null;
  let classes = 0;
  for (let s = 0; s < N; s += opt.batch) {
    const b = Math.min(opt.batch, N - s);
    let data;
    if (opt.dtype === 'uint8') {
      data = new Uint8Array(raw.buffer, raw.byteOffset + s * per, b * per);
    } else {
      data = new Float32Array(b * per);
      for (let k = 0; k < b * per; k++) data[k] = raw.readFloatLE((s * per + k) * 4);
    }
    const feeds = { [inName]: new ort.Tensor(opt.dtype, data, [b, C, H, W]) };
    const res = await session.run(feeds);
    const y = res[outName];
    if (!logits) {
      classes = y.dims[1];
      logits = new Float32Array(N * classes);
    }
    logits.set(y.data, s * classes);
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const buf = Buffer.alloc(logits.length * 4);
  for (let k = 0; k < logits.length; k++) buf.writeFloatLE(logits[k], k * 4);
  fs.writeFileSync(out, buf);
  console.log(JSON.stringify({ images: N, classes, seconds, ort: ort.env.versions }));
}

main().catch((e) => {
  process.stderr.write(`ort_eval.js: ${e.message.split('\n')[0]}\n`);
  process.exit(1);
});
