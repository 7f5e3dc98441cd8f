#!/usr/bin/env node
// Prints the C++ sources of the addon, one per line, relative to the package root with forward slashes:
// every .cc under native/core, native/cpu, native/layer and native/addon, recursively, except anything in
// a directory named `test` (native/cpu/test/ holds standalone kernel tests, not addon code).
// Used by binding.gyp ("<!@(node scripts/list-sources.cjs)"), so new files are picked up automatically.
// CMakeLists.txt applies the same rule with file(GLOB_RECURSE).
'use strict';
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const dirs = ['native/core', 'native/cpu', 'native/layer', 'native/addon'];

function walk(rel, out) {
  const abs = path.join(root, rel);
  let entries;
  try {
    entries = fs.readdirSync(abs, { withFileTypes: true });
  } catch {
    return;
  }
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const e of entries) {
    const child = rel + '/' + e.name;
    if (e.isDirectory()) {
      if (e.name !== 'test') walk(child, out);
    } else if (e.isFile() && e.name.endsWith('.cc')) {
      out.push(child);
    }
  }
}

const out = [];
for (const d of dirs) walk(d, out);
if (out.length === 0) {
  process.stderr.write('list-sources: no .cc files under ' + dirs.join(', ') + '\n');
  process.exit(1);
}
process.stdout.write(out.join('\n') + '\n');
