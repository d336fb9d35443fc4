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
# ... and runs steps on it: its supervisor is installed beside it.
test -x "$tmp/prefix/lib/crucible-engine/plugins/crucible-localproc-supervisor"
env -u CRUCIBLE_PLUGIN_PATH "$tmp/prefix/bin/crucible-engine" run "$src/workflows/hello.toml" \
  --state-dir "$tmp/installed-state" >/dev/null 2>&1

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

# Per-step options reach the plugin: [steps.sample] max_argc = 2 refuses a 3-argument step.
cat > "$tmp/wf2.toml" <<'TOML'
[workflow]
name = "on-sample-limited"
backend = "sample"

[[steps]]
id = "too-long"
retry_delay = "10ms"
run = ["a", "b", "c"]
[steps.sample]
max_argc = 2
TOML
set +e
CRUCIBLE_PLUGIN_PATH="$tmp/sample" "$tmp/prefix/bin/crucible-engine" run "$tmp/wf2.toml" --state-dir "$tmp/state2" --json >"$tmp/out2.json" 2>/dev/null
rc=$?
set -e
test "$rc" -eq 1
python3 - "$tmp/out2.json" <<'PY'
import json, sys
status = json.load(open(sys.argv[1]))
step = status["steps"][0]
assert step["state"] == "failed", step
assert step["reason"] == "backend_error", step
assert step["attempts"] == 4, step  # one attempt and three infrastructure retries
PY
echo "sdk install and out-of-tree plugin: ok"
