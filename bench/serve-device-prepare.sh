#!/usr/bin/env bash
# Here (npm, the build tools): packs what bench/serve-device.sh needs on a bare Linux x86-64 machine with no
# network and no npm into git-ignored files, then prints their sizes and the device call's carry list.
#
#   .device/node.xz            this machine's node (made only when missing: shared with bench/cuda/)
#   .device/serve-rt.node.xz   the CPU build of the addon (build/Release/rt.node, stripped; rebuilt when a
#                              CPU source under native/ is newer, or with --rebuild)
#   .device/serve-nm.tar.xz    node_modules that dist/ and bench/serve.mjs import at run time: the
#                              dependencies (not node-addon-api, headers for a build, nor js-tiktoken, read
#                              only by BpeTokenizer.gpt2()) and autocannon, each with all of its own
#   dist/                      compiled here (tsc), carried as it is
#
# Other files in .device/ (bench/cuda's) are left alone.
#   bash bench/serve-device-prepare.sh [--rebuild]
set -euo pipefail
cd "$(dirname "$0")/.."
rebuild=0
[[ "${1:-}" == --rebuild ]] && rebuild=1

npx tsc -p tsconfig.json
addon=build/Release/rt.node
newest=$(find native binding.gyp -path native/cuda -prune -o -type f -newer "$addon" -print 2>/dev/null | head -1 || true)
if (( rebuild )) || [[ ! -f $addon ]] || [[ -n $newest ]]; then
  echo "building the CPU addon${newest:+ ($newest is newer than $addon)}"
  npm run build:native
fi

mkdir -p .device
[[ -f .device/node.xz ]] || xz -T2 -6 -c "$(command -v node)" > .device/node.xz
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
strip --strip-unneeded -o "$tmp/rt.node" "$addon"
xz -T2 -6 -c "$tmp/rt.node" > .device/serve-rt.node.xz

# The packages' closure as npm resolved it (npm query: every package under the selectors, at any depth),
# as paths relative to node_modules/.
npm query ':root > .prod, :root > .prod *, #autocannon, #autocannon *' |
  node -e '
    const skip = new Set(["node_modules/node-addon-api", "node_modules/js-tiktoken"]);
    const rows = JSON.parse(require("fs").readFileSync(0, "utf8"));
    const dirs = [...new Set(rows.map((r) => r.location).filter((l) => l.startsWith("node_modules/") && !skip.has(l)))].sort();
    // A package nested in another (node_modules/a/node_modules/b) travels with its parent.
    const top = dirs.filter((d) => !dirs.some((p) => p !== d && d.startsWith(p + "/")));
    process.stdout.write(top.map((d) => d.slice("node_modules/".length)).join("\n") + "\n");
  ' > "$tmp/packages"
tar -C node_modules -cf - -T "$tmp/packages" | xz -T2 -6 > .device/serve-nm.tar.xz
echo "$(wc -l < "$tmp/packages") packages in .device/serve-nm.tar.xz"

carry=(.device/node.xz .device/serve-rt.node.xz .device/serve-nm.tar.xz dist)
du -scb "${carry[@]}" | awk '{ printf "%8.1f MiB  %s\n", $1 / 1048576, $2 }'
total=$(du -scb "${carry[@]}" | tail -1 | cut -f1)
if (( total >= 64 * 1048576 )); then
  echo "the carried files add up to $total bytes, over the device tool's 64 MiB" >&2
  exit 1
fi
printf 'carry: ["%s"]\ncommand: bash bench/serve-device.sh\n' "$(IFS='|'; echo "${carry[*]}" | sed 's/|/", "/g')"
