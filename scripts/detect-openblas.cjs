#!/usr/bin/env node
// Where the static OpenBLAS is, for binding.gyp (and the same rule as CMakeLists.txt).
//   node scripts/detect-openblas.cjs lib      -> path of libopenblas.a, or an empty line
//   node scripts/detect-openblas.cjs include  -> its include directory, or an empty line
// Empty (builtin GEMM fallback) when RT_NO_OPENBLAS=1 is set or the library is not installed.
// Debian/Ubuntu: apt-get install -y libopenblas-dev (pthread variant, runtime CPU dispatch).
// Override the location with RT_OPENBLAS_LIB / RT_OPENBLAS_INCLUDE.
'use strict';
const fs = require('fs');

const what = process.argv[2];
const off = process.env.RT_NO_OPENBLAS && process.env.RT_NO_OPENBLAS !== '0';

const lib = process.env.RT_OPENBLAS_LIB || '/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.a';
const inc = process.env.RT_OPENBLAS_INCLUDE || '/usr/include/x86_64-linux-gnu/openblas-pthread';
const found = !off && process.platform === 'linux' && fs.existsSync(lib) && fs.existsSync(inc + '/cblas.h');

if (what === 'lib') process.stdout.write((found ? lib : '') + '\n');
else if (what === 'include') process.stdout.write((found ? inc : '') + '\n');
else {
  process.stderr.write('usage: detect-openblas.cjs lib|include\n');
  process.exit(2);
}
