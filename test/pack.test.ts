// The packed tarball works where no compiler is: `npm pack`, install the tarball (install scripts ON, so
// node-gyp-build's install step must find the prebuild and compile nothing) into a fresh project whose PATH
// holds only `node` and `npm` (no cc, c++, gcc, g++, make, cmake, python3, nvcc), run a layer through the
// prebuilt addon, train a tiny checkpoint with the installed `rt train` and stream from it with `rt generate`.
// When the CUDA platform package has been built here (`npm run prebuildify:cuda` -> packages/linux-x64-cuda/),
// it is packed and installed next to it, and `RT_DEVICE=cuda rt generate` must use it or fall back to the
// CPU with the warning that says why (no GPU on the build machines).
//
// Nothing in the repository is touched: the tarball is packed with --ignore-scripts, unpacked into a
// temp folder, given a fresh `dist/` (tsc) and, unless the repository's prebuilds/ is newer than every
// native source, a fresh prebuild (`npm run prebuildify` in that temp copy, so the repository's build/
// that other test files load is never rebuilt under them), and packed again. Slow: it compiles the addon.
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import {
  existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, test } from 'vitest';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const supported = process.platform === 'linux' && process.arch === 'x64';
const tuple = `${process.platform}-${process.arch}`;

if (!supported) console.warn(`pack.test: skipped, prebuilds are only checked on linux-x64 (this is ${tuple})`);

// Environment for the npm processes started here: the outer `npm test` exports npm_* variables
// (npm_package_*, npm_lifecycle_*, npm_config_local_prefix...) that must not leak into an npm run in
// another folder. Keep the few settings that say where things are.
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const keep = new Set(['npm_config_nodedir', 'npm_config_cache', 'npm_config_userconfig', 'npm_config_registry']);
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^npm_/i.test(k) && !keep.has(k.toLowerCase())) continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

function run(cmd: string, args: string[], opts: SpawnSyncOptions & { cwd: string }): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20, ...opts });
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  if (r.error || r.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} (in ${opts.cwd}) failed: ${r.error?.message ?? `exit ${r.status}`}\n${out.slice(-6000)}`);
  }
  return String(r.stdout ?? '');
}

function newestMtime(paths: string[]): number {
  let newest = 0;
  const visit = (p: string) => {
    if (!existsSync(p)) return;
    const st = statSync(p);
    if (st.isDirectory()) for (const e of readdirSync(p)) visit(join(p, e));
    else newest = Math.max(newest, st.mtimeMs);
  };
  for (const p of paths) visit(p);
  return newest;
}

function nodeFiles(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.node')).map((f) => join(dir, f)) : [];
}

// The repository's prebuild is reused only when it is newer than everything it is built from.
function repoPrebuildIsFresh(): boolean {
  const built = nodeFiles(join(root, 'prebuilds', tuple));
  if (built.length === 0) return false;
  const oldest = Math.min(...built.map((f) => statSync(f).mtimeMs));
  const inputs = ['native', 'binding.gyp', 'scripts/list-sources.cjs', 'scripts/detect-openblas.cjs'];
  return oldest > newestMtime(inputs.map((p) => join(root, p)));
}

const work = mkdtempSync(join(tmpdir(), 'rt-pack-'));
afterAll(() => {
  if (process.env.RT_KEEP_PACK_TMP) console.log(`pack.test: kept ${work}`);
  else rmSync(work, { recursive: true, force: true });
});

describe.skipIf(!supported)('packed tarball', () => {
  test('installs with no compiler on PATH, runs a layer, rt train and rt generate (and the CUDA package when built)', () => {
    const npmCli = join(dirname(process.execPath), 'npm');
    const env = cleanEnv();

    // 1. The tarball exactly as `files` in package.json selects it, without running prepack.
    const packDir = join(work, 'pack1');
    mkdirSync(packDir);
    const packed1 = JSON.parse(run(npmCli, ['pack', '--ignore-scripts', '--json', '--pack-destination', packDir], { cwd: root, env }));
    const tarball1 = join(packDir, packed1[0].filename as string);

    // 2. Unpack it, build dist/ and (when stale) the prebuild in the copy.
    const stage = join(work, 'stage');
    mkdirSync(stage);
    run('tar', ['xzf', tarball1, '-C', stage], { cwd: work });
    const pkg = join(stage, 'package');
    symlinkSync(join(root, 'node_modules'), join(pkg, 'node_modules'), 'dir');

    rmSync(join(pkg, 'dist'), { recursive: true, force: true });
    run(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(root, 'tsconfig.json'), '--outDir', join(pkg, 'dist')], { cwd: root, env });
    expect(existsSync(join(pkg, 'dist', 'index.js')), 'tsc wrote dist/index.js').toBe(true);

    if (repoPrebuildIsFresh()) {
      expect(nodeFiles(join(pkg, 'prebuilds', tuple)).length, 'the tarball carries prebuilds/').toBeGreaterThan(0);
    } else {
      rmSync(join(pkg, 'prebuilds'), { recursive: true, force: true });
      run(npmCli, ['run', 'prebuildify'], { cwd: pkg, env: { JOBS: 'max', ...env } });
      rmSync(join(pkg, 'build'), { recursive: true, force: true });
    }
    rmSync(join(pkg, 'node_modules'));

    const prebuilds = nodeFiles(join(pkg, 'prebuilds', tuple));
    expect(prebuilds.length, `prebuilds/${tuple}/*.node`).toBe(1);

    // 3. The prebuild is self-contained: only the C/C++ runtime, the loader and the vDSO.
    const ldd = run('ldd', [prebuilds[0]], { cwd: work });
    const libs = ldd.split('\n').map((l) => l.trim()).filter(Boolean).map((l) => l.split(/\s+/)[0]);
    expect(ldd).not.toMatch(/not found/);
    const allowed = /^(linux-vdso\.so|libc\.so|libstdc\+\+\.so|libm\.so|libgcc_s\.so|(\/lib64\/|\/lib\/x86_64-linux-gnu\/)?ld-linux-x86-64\.so)/;
    expect(libs.filter((l) => !allowed.test(l)), `unexpected shared libraries in:\n${ldd}`).toEqual([]);

    // 4. Pack the finished copy.
    const packDir2 = join(work, 'pack2');
    mkdirSync(packDir2);
    const packed2 = JSON.parse(run(npmCli, ['pack', '--ignore-scripts', '--json', '--pack-destination', packDir2], { cwd: pkg, env }));
    const tarball = join(packDir2, packed2[0].filename as string);
    const files = (packed2[0].files as { path: string }[]).map((f) => f.path);
    expect(files).toContain('dist/index.js');
    expect(files).toContain('package.json');
    expect(files.some((f) => f.startsWith(`prebuilds/${tuple}/`))).toBe(true);
    expect(files.some((f) => f.startsWith('build/'))).toBe(false);
    // The CUDA binary is a separate package, never in the main tarball.
    expect(files.filter((f) => f.startsWith('build-cuda/') || f.startsWith('packages/') || f.includes('cuda') && f.endsWith('.node'))).toEqual([]);

    // 5. A fresh project whose PATH has node and npm and nothing else: no g++, cc, c++, make, python.
    const bin = join(work, 'bin');
    mkdirSync(bin);
    symlinkSync(process.execPath, join(bin, 'node'));
    symlinkSync(npmCli, join(bin, 'npm'));
    // npm runs install scripts with `sh` from PATH; a shell is on every machine, a compiler is not.
    symlinkSync('/bin/sh', join(bin, 'sh'));
    const bare = cleanEnv({ PATH: bin });
    delete bare.RT_DEVICE;
    delete bare.RT_CUDA_ADDON;
    delete bare.RT_ADDON_PATH;
    const compilers = ['cc', 'c++', 'gcc', 'g++', 'clang', 'make', 'cmake', 'python3', 'python', 'nvcc'];
    const found = spawnSync('/bin/sh', ['-c', compilers.map((t) => `command -v ${t}`).join('; ')], { encoding: 'utf8', env: bare });
    expect(found.stdout.trim(), 'no compiler, make or python reachable from PATH').toBe('');
    const project = join(work, 'project');
    mkdirSync(project);
    writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'rt-pack-consumer', version: '1.0.0', private: true, type: 'module' }, null, 2));
    // Install scripts run: `node-gyp-build` must take the prebuild (a compile would fail here, with no compiler).
    const t0 = Date.now();
    const inst = spawnSync(join(bin, 'npm'), ['install', '--foreground-scripts', '--prefer-offline', '--no-audit', '--no-fund', tarball],
      { cwd: project, env: bare, encoding: 'utf8' });
    const instOut = `${inst.stdout}${inst.stderr}`;
    expect(inst.status, instOut).toBe(0);
    expect(instOut, 'the install script ran').toMatch(/recurrent-transformer@[^\n]* install\n> node-gyp-build/);
    const installed = join(project, 'node_modules', 'recurrent-transformer');
    expect(existsSync(join(installed, 'build')), 'no build/ in the installed package: nothing was compiled').toBe(false);
    console.log(`pack.test: tarball ${(statSync(tarball).size / 1e6).toFixed(1)} MB, prebuild ${(statSync(prebuilds[0]).size / 1e6).toFixed(1)} MB, installed in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

    // 6. Run a layer through the installed package.
    writeFileSync(join(project, 'smoke.mjs'), `
import { readFileSync } from 'node:fs';
import { Tensor, RecurrentLayer } from 'recurrent-transformer';

async function values(t) {
  for (const name of ['toArray', 'toFloat32Array', 'data']) {
    const v = typeof t[name] === 'function' ? await t[name]() : t[name];
    if (v && typeof v.length === 'number') return Array.from(v);
  }
  throw new Error('cannot read the values of the output tensor');
}

const layer = new RecurrentLayer({ d: 8, heads: 2, window: 4, variant: 'forget' });
const x = Tensor.fromArray(new Float32Array(2 * 5 * 8).fill(0.1), [2, 5, 8]);
const y = await layer.forward(x);
const v = await values(y);
const addons = [...new Set(readFileSync('/proc/self/maps', 'utf8').split('\\n')
  .map((l) => l.split(/\\s+/).slice(5).join(' ')).filter((p) => p.endsWith('.node')))];
console.log(JSON.stringify({ shape: Array.from(y.shape), count: v.length, finite: v.every(Number.isFinite), addons }));
`);
    const out = run(process.execPath, ['smoke.mjs'], { cwd: project, env: bare });
    const result = JSON.parse(out.trim().split('\n').pop() ?? '{}') as {
      shape: number[]; count: number; finite: boolean; addons: string[];
    };
    expect(result.shape).toEqual([2, 5, 8]);
    expect(result.count).toBe(2 * 5 * 8);
    expect(result.finite).toBe(true);
    expect(result.addons.length).toBeGreaterThan(0);
    for (const a of result.addons) expect(a.startsWith(join(installed, 'prebuilds', tuple))).toBe(true);

    // 7. A tiny checkpoint with the installed `rt train`, then `rt generate` from it (through the npm bin link).
    const rt = join(project, 'node_modules', '.bin', 'rt');
    const text = 'abcab cab\nbca abc\n'.repeat(40);
    writeFileSync(join(project, 'tiny.txt'), text);
    run(rt, ['train', '--task', 'text', '--data', 'tiny.txt', '--tokenizer', 'char', '--seq-len', '32', '--d', '16',
      '--heads', '2', '--window', '4', '--steps', '2', '--batch', '2', '--eval-every', '2', '--eval-batches', '1',
      '--out', 'run', '--json'], { cwd: project, env: bare });
    const checkpoint = join(project, 'run', 'checkpoint.safetensors');
    expect(existsSync(checkpoint), 'rt train wrote the checkpoint').toBe(true);
    const generateArgs = ['generate', '--checkpoint', checkpoint, '--prompt', 'ab', '--max-tokens', '20', '--seed', '1'];
    const generated = run(rt, generateArgs, { cwd: project, env: bare });
    // The prompt, then 20 one-character tokens of the training text's alphabet, then a newline.
    expect(generated.startsWith('ab')).toBe(true);
    expect(generated.endsWith('\n')).toBe(true);
    const continuation = generated.slice(2, -1);
    expect([...continuation]).toHaveLength(20);
    for (const ch of continuation) expect(new Set(text).has(ch), `generated ${JSON.stringify(ch)}`).toBe(true);

    // 8. The CUDA platform package, when it was built here.
    const cudaDir = join(root, 'packages', `${tuple}-cuda`);
    if (!existsSync(join(cudaDir, 'rt.node'))) {
      console.warn(`pack.test: ${cudaDir}/rt.node not built (npm run prebuildify:cuda): the CUDA package install is not checked`);
      return;
    }
    const packed3 = JSON.parse(run(npmCli, ['pack', '--json', '--pack-destination', packDir2], { cwd: cudaDir, env }));
    const cudaTarball = join(packDir2, packed3[0].filename as string);
    expect((packed3[0].files as { path: string }[]).map((f) => f.path).sort()).toEqual(['README.md', 'package.json', 'rt.node']);
    console.log(`pack.test: CUDA package tarball ${(statSync(cudaTarball).size / 1e6).toFixed(1)} MB`);
    run(join(bin, 'npm'), ['install', '--prefer-offline', '--no-audit', '--no-fund', cudaTarball], { cwd: project, env: bare });
    const cudaNode = join(project, 'node_modules', '@recurrent-transformer', `${tuple}-cuda`, 'rt.node');
    expect(existsSync(cudaNode)).toBe(true);

    const status = JSON.parse(run(process.execPath, ['--input-type=module', '-e',
      "import { cudaStatus } from 'recurrent-transformer'; console.log(JSON.stringify(cudaStatus()))"], { cwd: project, env: bare }).trim()) as {
      built: boolean; available: boolean; reason?: string; path?: string;
    };
    expect(status.built).toBe(true);
    expect(status.path).toBe(cudaNode);
    const r = spawnSync(rt, generateArgs, { cwd: project, env: { ...bare, RT_DEVICE: 'cuda' }, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    if (status.available) {
      expect(r.stderr).not.toMatch(/RT_CUDA_FALLBACK/);
    } else {
      // No GPU here: the same text as on the CPU, and the warning names the binary and why.
      expect(r.stderr).toContain(`[RT_CUDA_FALLBACK] Warning: RT_DEVICE=cuda: CUDA cannot be used, running on the CPU: ${cudaNode} loads, but no GPU can be used: `);
      expect(r.stdout).toBe(generated);
    }
    // A CUDA package of another version is refused (the addon's interface changes between versions).
    const cudaPkgJson = join(dirname(cudaNode), 'package.json');
    const original = readFileSync(cudaPkgJson, 'utf8');
    writeFileSync(cudaPkgJson, original.replace(/"version": "[^"]+"/, '"version": "0.0.0-other"'));
    const mismatch = JSON.parse(run(process.execPath, ['--input-type=module', '-e',
      "import { cudaStatus } from 'recurrent-transformer'; console.log(JSON.stringify(cudaStatus()))"], { cwd: project, env: bare }).trim()) as { reason?: string };
    writeFileSync(cudaPkgJson, original);
    expect(mismatch.reason).toMatch(/^@recurrent-transformer\/linux-x64-cuda is version 0\.0\.0-other, but recurrent-transformer is \S+: install @recurrent-transformer\/linux-x64-cuda@/);
  }, 900_000);
});
