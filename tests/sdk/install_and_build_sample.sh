#!/usr/bin/env bash
# Installs crucible-engine and its SDK into a temporary prefix, builds
# examples/backend-sample out of tree with find_package(CrucibleSDK), and checks
# that the installed binary finds its own plugins under the prefix and the
# sample through CRUCIBLE_PLUGIN_PATH, and runs a workflow on it.
#   install_and_build_sample.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
test -x "$tmp/prefix/bin/crucible-engine"
test -f "$tmp/prefix/include/crucible/backend_abi.h"

cmake -S "$src/examples/backend-sample" -B "$tmp/sample" -G Ninja -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/sample" >/dev/null
test -f "$tmp/sample/libcrucible-backend-sample.so"

# The installed binary finds localproc under its prefix, without any variable.
out=$(env -u CRUCIBLE_PLUGIN_PATH "$tmp/prefix/bin/crucible-engine" plugins)
echo "$out"
grep -q "localproc" <<<"$out"
grep -q "$tmp/prefix/lib" <<<"$out"

# A third-party plugin through CRUCIBLE_PLUGIN_PATH, next to the shipped ones.
out=$(CRUCIBLE_PLUGIN_PATH="$tmp/sample" "$tmp/prefix/bin/crucible-engine" plugins)
grep -q "sample" <<<"$out"
grep -q "localproc" <<<"$out"

cat > "$tmp/wf.toml" <<'TOML'
[workflow]
name = "on-sample"
backend = "sample"

[backends.sample]
greeting = "hi from the test"

[[steps]]
id = "one"
run = ["a", "b", "c"]
TOML
CRUCIBLE_PLUGIN_PATH="$tmp/sample" "$tmp/prefix/bin/crucible-engine" run "$tmp/wf.toml" --state-dir "$tmp/state"
out=$(CRUCIBLE_PLUGIN_PATH="$tmp/sample" "$tmp/prefix/bin/crucible-engine" results --state-dir "$tmp/state" \
  "$(CRUCIBLE_PLUGIN_PATH="$tmp/sample" "$tmp/prefix/bin/crucible-engine" runs --json --state-dir "$tmp/state" |
     python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["run_id"])')")
echo "$out"
grep -q "argc" <<<"$out"
echo "sdk install and out-of-tree plugin: ok"
