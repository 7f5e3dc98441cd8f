#!/usr/bin/env node
// Builds the CUDA addon and lays it out as the platform package @recurrent-transformer/linux-x64-cuda in
// packages/linux-x64-cuda/ (npm run prebuildify:cuda; then `npm pack packages/linux-x64-cuda` or
// `npm publish packages/linux-x64-cuda --access public`).
//
// Why a separate package and not a file in the main tarball: the CUDA .node carries the CPU backend,
// static OpenBLAS, static cudart and sm_80/sm_90 kernels, several times the CPU prebuild's size, and most
// installs (CPU machines, CI) never use it. node-llama-cpp (@node-llama-cpp/linux-x64-cuda) and sharp
// (@img/sharp-linux-x64) ship native variants the same way, so users know the pattern. It is not listed
// in optionalDependencies yet (see README, "Install"): npm would then download it on every linux-x64
// install, and an unpublished name there would be looked up on the public registry.
//
//   node scripts/prebuildify-cuda.cjs              cmake-js compile --CDRT_CUDA=ON --out build-cuda, then package
//   node scripts/prebuildify-cuda.cjs --no-build   package the existing build-cuda/Release/rt.node
// Env: JOBS (parallel compile jobs, default 2), RT_CUDA_ARCHS (e.g. "80;90", CMake's list).
'use strict';
const { spawnSync } = require('node:child_process');
const { copyFileSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } = require('node:fs');
const { join } = require('node:path');

const root = join(__dirname, '..');
const tuple = `${process.platform}-${process.arch}`;
const outDir = join(root, 'packages', `${tuple}-cuda`);
const built = join(root, 'build-cuda', 'Release', 'rt.node');
const args = process.argv.slice(2);
for (const a of args) {
  if (a !== '--no-build') {
    console.error(`prebuildify-cuda: unknown argument '${a}' (expected --no-build or nothing)`);
    process.exit(2);
  }
}

function run(cmd, argv, opts = {}) {
  console.error(`prebuildify-cuda: ${cmd} ${argv.join(' ')}`);
  const r = spawnSync(cmd, argv, { stdio: 'inherit', cwd: root, ...opts });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${cmd} ${argv.join(' ')} exited with ${r.status ?? r.signal}`);
}

if (!args.includes('--no-build')) {
  const cmakeJs = join(root, 'node_modules', 'cmake-js', 'bin', 'cmake-js');
  if (!existsSync(cmakeJs)) throw new Error('prebuildify-cuda: node_modules/cmake-js is missing (run npm install first)');
  const jobs = String(process.env.JOBS ?? '2');
  const extra = process.env.RT_CUDA_ARCHS ? [`--CDCMAKE_CUDA_ARCHITECTURES=${process.env.RT_CUDA_ARCHS}`] : [];
  run(process.execPath, [cmakeJs, 'compile', '--CDRT_CUDA=ON', ...extra, '--out', 'build-cuda', '--parallel', jobs],
    { env: { ...process.env, CMAKE_BUILD_PARALLEL_LEVEL: jobs } });
}
if (!existsSync(built)) throw new Error(`prebuildify-cuda: ${built} does not exist (build it: npm run build:cuda)`);

// A build where CMake found no .cu files (or no nvcc) is a CPU addon under a CUDA name: refuse to ship it.
// Checked in a child so that this script survives an addon that crashes on load.
const probe = spawnSync(process.execPath, ['-e',
  'const a = require(process.argv[1]); process.stdout.write(JSON.stringify(a.LayerHandle.cudaStatus()))', built],
{ encoding: 'utf8' });
if (probe.status !== 0) throw new Error(`prebuildify-cuda: ${built} does not load: ${probe.stderr || probe.signal}`);
const status = JSON.parse(probe.stdout);
if (!status.built) throw new Error(`prebuildify-cuda: ${built} was built without CUDA (was nvcc found?)`);

mkdirSync(outDir, { recursive: true });
const target = join(outDir, 'rt.node');
copyFileSync(built, target);
// --strip-unneeded keeps the dynamic symbols and the .nv_fatbin section the CUDA runtime needs.
const strip = spawnSync('strip', ['--strip-unneeded', target], { stdio: 'inherit' });
if (strip.status !== 0) console.error('prebuildify-cuda: strip failed or is missing; shipping the unstripped binary');

const main = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const [os, cpu] = tuple.split('-');
const pkg = {
  name: `@recurrent-transformer/${tuple}-cuda`,
  // The loader accepts only the exact version of the main package: the addon's JS-facing interface
  // changes between versions.
  version: main.version,
  description: `CUDA build of the recurrent-transformer addon for ${tuple} (CPU backend included, static CUDA runtime, sm_80 and sm_90)`,
  license: main.license,
  repository: main.repository,
  os: [os],
  cpu: [cpu],
  ...(os === 'linux' ? { libc: ['glibc'] } : {}),
  files: ['rt.node', 'README.md'],
  exports: { './rt.node': './rt.node', './package.json': './package.json' },
  engines: main.engines,
};
for (const k of Object.keys(pkg)) if (pkg[k] === undefined) delete pkg[k];
writeFileSync(join(outDir, 'package.json'), JSON.stringify(pkg, null, 2) + '\n');
writeFileSync(join(outDir, 'README.md'), `# ${pkg.name}

The CUDA build of [recurrent-transformer](https://www.npmjs.com/package/recurrent-transformer)'s native
addon for ${tuple}: CPU backend + CUDA backend, static CUDA runtime, kernels for compute capability 8.0 and
9.0. Needs an NVIDIA driver for CUDA ${status.cudaVersion ?? '13'} or newer. Install it next to the main
package (same version):

    npm install recurrent-transformer@${pkg.version} ${pkg.name}@${pkg.version}

recurrent-transformer test-loads it in a child process before using it and falls back to its CPU build,
with a warning that says why, when it cannot be used.
`);
const size = statSync(target).size;
console.error(`prebuildify-cuda: wrote ${target} (${(size / 1e6).toFixed(1)} MB; cudaStatus here: ${JSON.stringify(status)})`);
