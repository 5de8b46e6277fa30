#!/usr/bin/env bash
# The check for a machine with an NVIDIA GPU, run from the repository root.
# It needs python3 with torch (a CUDA build), transformers, peft,
# safetensors and numpy there; bitsandbytes is optional (QLoRA then holds
# its base in the worker's own NF4). Node.js and node_modules may be
# missing: prepare them first, on a machine with Node 20 and this checkout's
# node_modules installed:
#
#   bash bench/gpu-check.sh --pack    # builds dist/ and writes .gpu/runtime.tar.xz
#                                     # (node, dist/, the runtime node_modules; under 60 MiB)
#
# and bring .gpu/ along with the working tree. Then, on the GPU machine:
#
#   bash bench/gpu-check.sh           # a few minutes; the parts' timeouts add up to under 8
#   bash bench/gpu-check.sh --cpu     # a dry run without a GPU: torch-cpu, llama-tiny for llama1b
#
# Parts, each under a heading, each going on when one before it failed:
#   1 runtime     node and node_modules, unpacked from .gpu/ when missing
#   2 device      nvidia-smi, torch's view of CUDA, `tunegraph backends`
#   3 quickstart  pipelines/quickstart.ts on torch-cuda in a temp store: the summary
#                 line and the eval scores (tuned vs base loss)
#   4 llama1b     LoRA in bf16 on a 1.24B Llama-3.2-1B-style model (bench/train.ts):
#                 tokens/s, peak device memory, MFU, and the bare PyTorch loop beside it
#   5 qlora       QLoRA's base-weight memory on llama1b as a share of the bf16 base
#   6 peft        the quickstart's exported adapter loaded with PeftModel.from_pretrained
#                 on the exported base, its logits against the merged export
# A summary with each part's status and the total wall time ends the output;
# the logs stay in the work directory it names.
set -u
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 NO_COLOR=1 TOKENIZERS_PARALLELISM=false
export TRANSFORMERS_VERBOSITY=error HF_HUB_DISABLE_PROGRESS_BARS=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1
PACK_DIR=$ROOT/.gpu
TARBALL=$PACK_DIR/runtime.tar.xz
LIMIT_MIB=60

# ---------------------------------------------------------------- --pack
if [ "${1:-}" = "--pack" ]; then
  set -o pipefail
  node_bin=$(command -v node) || { echo "--pack needs node on PATH" >&2; exit 1; }
  node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' ||
    { echo "--pack needs Node 20 or later (found $(node --version))" >&2; exit 1; }
  [ -d node_modules ] || { echo "--pack needs this checkout's node_modules (npm ci)" >&2; exit 1; }
  mkdir -p "$PACK_DIR" .git/info
  grep -qxF '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >>.git/info/exclude
  echo "building dist/"
  npm run build --silent || { echo "npm run build failed" >&2; exit 1; }
  stage=$(mktemp -d "${TMPDIR:-/tmp}/tg-gpu-pack-XXXXXX")
  trap 'rm -rf "$stage"' EXIT
  # The packages the CLI and bench/train.ts load at run time, with what they depend on.
  # Effect and @effect/platform-node are bundled into dist/, but the bench bundle imports
  # effect; prebuild-install only runs at install time.
  node - "$stage/packages" <<'EOF' || exit 1
const fs = require("node:fs"), path = require("node:path")
const roots = ["@tensorflow/tfjs-core", "@tensorflow/tfjs-backend-cpu", "@tensorflow/tfjs-backend-wasm",
  "better-sqlite3", "tokenizers", "esbuild", "chokidar", "hyparquet", "@huggingface/jinja", "effect"]
const skip = (n) => n === "prebuild-install" || n.startsWith("@types/") || n === "@webgpu/types"
const seen = new Set(), queue = [...roots]
while (queue.length > 0) {
  const n = queue.shift()
  if (seen.has(n) || skip(n)) continue
  const pj = path.join("node_modules", n, "package.json")
  if (!fs.existsSync(pj)) {
    if (roots.includes(n)) { console.error(`node_modules lacks ${n}`); process.exit(1) }
    continue // an optional dependency for another platform
  }
  seen.add(n)
  const p = JSON.parse(fs.readFileSync(pj, "utf8"))
  queue.push(...Object.keys({ ...p.dependencies, ...p.optionalDependencies }))
}
fs.writeFileSync(process.argv[2], [...seen].sort().join("\n") + "\n")
EOF
  echo "runtime packages: $(tr '\n' ' ' <"$stage/packages")"
  # Their files, less what nothing loads at run time: source maps, type declarations, docs,
  # Effect's sources, other platforms' tokenizers binaries, better-sqlite3's build tree,
  # tfjs bundles other than the Node entry and its wasm, esbuild's copy of its binary.
  sed 's|^|node_modules/|' "$stage/packages" | xargs -I{} find {} \( -type f -o -type l \) |
    grep -vE '\.map$|\.d\.[cm]?ts$|\.(md|markdown)$|/CHANGELOG[^/]*$' |
    grep -vE '^node_modules/effect/(src|ai-docs)/' |
    grep -vE '^node_modules/tokenizers/tokenizers\.[^/]+\.node$|^node_modules/tokenizers/tokenizers\.linux-x64-(gnu|musl)\.node$' |
    grep -vE '^node_modules/better-sqlite3/(deps|src)/' |
    grep -vE '^node_modules/better-sqlite3/build/' >"$stage/files"
  # Put back what the filters took and the runtime needs.
  for f in node_modules/tokenizers/tokenizers.linux-x64-gnu.node node_modules/tokenizers/tokenizers.linux-x64-musl.node \
    node_modules/better-sqlite3/build/Release/better_sqlite3.node; do
    [ -f "$f" ] && echo "$f" >>"$stage/files"
  done
  grep -vE '^node_modules/@tensorflow/tfjs-[a-z-]+/dist/' "$stage/files" >"$stage/keep"
  grep -E '^node_modules/@tensorflow/tfjs-[a-z-]+/dist/[^/]+(\.node\.js|\.wasm)$' "$stage/files" >>"$stage/keep"
  grep -vxF node_modules/esbuild/bin/esbuild "$stage/keep" | sort -u >"$stage/files"
  [ -f node_modules/better-sqlite3/build/Release/better_sqlite3.node ] ||
    { echo "better-sqlite3's native module is missing (npm ci)" >&2; exit 1; }
  mkdir -p "$stage/tree/node/bin"
  cp "$node_bin" "$stage/tree/node/bin/node"
  cp -r dist "$stage/tree/dist"
  tar -cf - -T "$stage/files" | tar -xf - -C "$stage/tree"
  {
    echo "node $(node --version) from $node_bin"
    echo "commit $(git rev-parse HEAD 2>/dev/null)$(git diff --quiet HEAD 2>/dev/null || echo ' (with local changes)')"
    echo "packed $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m)"
  } >"$stage/tree/MANIFEST"
  du -sh "$stage/tree/node" "$stage/tree/dist" "$stage/tree/node_modules" | sed 's|'"$stage"'/tree/|  uncompressed |'
  echo "compressing (xz)"
  rm -f "$TARBALL"
  tar -cf - -C "$stage/tree" MANIFEST node dist node_modules | xz -T0 -6 >"$TARBALL.tmp" &&
    mv "$TARBALL.tmp" "$TARBALL" || { echo "compression failed" >&2; exit 1; }
  cp "$stage/tree/MANIFEST" "$PACK_DIR/MANIFEST"
  bytes=$(wc -c <"$TARBALL")
  mib=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
  echo "$TARBALL: $mib MiB ($bytes bytes); .gpu/ in all: $(du -sh "$PACK_DIR" | cut -f1)"
  if [ "$bytes" -gt $((LIMIT_MIB * 1048576)) ]; then
    echo "FAIL: over $LIMIT_MIB MiB" >&2
    exit 1
  fi
  echo "ok: under $LIMIT_MIB MiB; bring .gpu/ to the GPU machine and run bash bench/gpu-check.sh there"
  exit 0
fi

# ---------------------------------------------------------------- the check
CPU=0
for a in "$@"; do
  case "$a" in
    --cpu) CPU=1 ;;
    *) echo "usage: bash bench/gpu-check.sh [--pack | --cpu]" >&2; exit 2 ;;
  esac
done
START=$(date +%s)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tg-gpu-check-XXXXXX")
export ROOT WORK CPU TARBALL
export TUNEGRAPH_CACHE_DIR=$WORK/cache
SUMMARY=()

# Runs one part: a heading, the function under a timeout (its process group is killed
# when time runs out), the output kept in $WORK/<name>.log, and a status line.
part() {
  local name=$1 limit=$2 fn=$3 t0 rc status
  echo
  echo "=== $name (timeout ${limit}s) ==="
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" bash -c "set -u; $fn" 2>&1 | tee "$WORK/$name.log"
  rc=${PIPESTATUS[0]}
  case $rc in
    0) status=ok ;;
    124 | 137) status="FAILED (timed out after ${limit}s)" ;;
    *) status="FAILED (exit $rc)" ;;
  esac
  echo "--- $name: $status in $(($(date +%s) - t0)) s"
  SUMMARY+=("$(printf '%-11s %-34s %4s s' "$name" "$status" "$(($(date +%s) - t0))")")
}

# 1: node and node_modules. A machine that has both keeps its own; otherwise the packed
# ones are unpacked, and the packed node comes first on PATH (the native modules were
# built for its ABI).
runtime() {
  dest=$ROOT/.gpu/runtime
  have_node=0
  if command -v node >/dev/null && node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)'; then
    have_node=1
  fi
  # node_modules unpacked by an earlier run go with the packed node.
  [ -f "$ROOT/node_modules/.tunegraph-packed" ] && have_node=0
  if [ "$have_node" = 1 ] && [ -d "$ROOT/node_modules/better-sqlite3" ] && [ ! -f "$ROOT/dist/cli.js" ] && command -v npm >/dev/null; then
    (cd "$ROOT" && npm run build --silent) || exit 1
  fi
  if [ "$have_node" = 1 ] && [ -d "$ROOT/node_modules/better-sqlite3" ] && [ -f "$ROOT/dist/cli.js" ]; then
    echo "using this machine's node $(node --version) and node_modules"
    echo "PATH=$PATH" >"$WORK/env"
    exit 0
  fi
  if [ ! -x "$dest/node/bin/node" ]; then
    [ -f "$TARBALL" ] || { echo "no node and node_modules here, and no $TARBALL: run bash bench/gpu-check.sh --pack where Node is, and bring .gpu/"; exit 1; }
    rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
    echo "unpacking $TARBALL ($(du -h "$TARBALL" | cut -f1))"
    if ! tar -xJf "$TARBALL" -C "$dest.tmp" 2>/dev/null; then
      echo "tar -xJ failed (no xz?): unpacking with Python's tarfile"
      python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$TARBALL" "$dest.tmp" || exit 1
    fi
    touch "$dest.tmp/node_modules/.tunegraph-packed"
    mv "$dest.tmp" "$dest"
  fi
  cat "$dest/MANIFEST"
  # Moved into place (ignored paths, as npm ci and npm run build leave them).
  for d in dist node_modules; do
    if [ ! -e "$ROOT/$d" ] && [ -d "$dest/$d" ]; then
      mv "$dest/$d" "$ROOT/$d" && echo "$d/: from the pack"
    elif [ "$d" = node_modules ] && [ ! -f "$ROOT/node_modules/.tunegraph-packed" ]; then
      echo "note: this machine's node_modules is kept; the packed node may not match its native modules"
    fi
  done
  echo "PATH=$dest/node/bin:$PATH" >"$WORK/env"
  echo "node: $dest/node/bin/node $(PATH=$dest/node/bin:$PATH node --version)"
}
export -f runtime

# 2: the device.
device() {
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv
    nvidia-smi | sed -n '1,4p'
  else
    echo "no nvidia-smi on PATH"
  fi
  python3 - <<'EOF'
import importlib.util, torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"device 0: {p.name}, {p.total_memory / 2**30:.1f} GiB, capability {p.major}.{p.minor}, bf16: {torch.cuda.is_bf16_supported()}")
print("bitsandbytes:", "installed" if importlib.util.find_spec("bitsandbytes") else "absent (QLoRA uses the worker's own NF4)")
EOF
  node "$ROOT/bin/tunegraph.js" backends
}
export -f device

# 3: the quickstart in a temp project and store, on $BACKEND.
quickstart() {
  dir=$WORK/quickstart
  mkdir -p "$dir"
  cp -r "$ROOT/pipelines/." "$dir/"
  echo '{}' >"$dir/package.json"
  cd "$dir" || exit 1
  echo "project and store: $dir (TUNEGRAPH_BACKEND=$BACKEND)"
  TUNEGRAPH_BACKEND=$BACKEND node "$ROOT/bin/tunegraph.js" run quickstart.ts >run.log 2>&1
  rc=$?
  grep -E '^ *(ran|failed) +(train|eval) |^ *failed ' run.log
  tail -n 1 run.log
  [ "$rc" = 0 ] || { echo "the quickstart failed (exit $rc):"; tail -n 30 run.log; exit 1; }
  # The base as a Hugging Face directory, for part 6: export-merged without an adapter.
  cat >export-base.ts <<'EOF'
import { exportMerged, Model, Pipeline, Tokenizer } from "tunegraph"
const p = Pipeline.make("export-base")
const base = p.source("base", "data/stories260K/stories260K.bin", Model)
const tokenizer = p.source("tokenizer", "data/stories260K/tok512.bin", Tokenizer)
p.node("export-base", exportMerged, { inputs: { model: base, tokenizer }, params: { to: "out/quickstart/base" } })
export default p
EOF
  node "$ROOT/bin/tunegraph.js" run export-base.ts >export-base.log 2>&1 || { echo "exporting the base failed:"; tail -n 20 export-base.log; exit 1; }
  python3 - "$dir" <<'EOF'
import glob, json, os, sys
d = sys.argv[1]
reports = glob.glob(os.path.join(d, ".tunegraph/objects/*/*/report.json"))
if not reports:
    sys.exit("no eval report in the store")
r = json.load(open(reports[0]))
s = r["scores"]
print(f"eval on {r['settings'].get('backend')}: tuned loss {s['tuned']['loss']:.4f} vs base {s['base']['loss']:.4f} "
      f"(perplexity {s['tuned']['perplexity']:.3f} vs {s['base']['perplexity']:.3f}); "
      f"uses_name {s['tuned'].get('uses_name')} vs {s['base'].get('uses_name')}")
t = json.load(open(os.path.join(d, "out/quickstart/adapter/training.json")))
f = lambda x: "-" if x is None else f"{x:.4f}"
print(f"trained on {t.get('backend')}: {t.get('steps')} steps, final train loss {f(t.get('finalTrainLoss'))}, best validation loss {f(t.get('bestValLoss'))}")
if not s["tuned"]["loss"] < s["base"]["loss"]:
    sys.exit("the tuned model does not beat its base")
EOF
}
export -f quickstart

# 4 and 5: bench/train.ts on llama1b (llama-tiny with --cpu), bundled here with esbuild.
bench() {
  cd "$ROOT" || exit 1
  # As the bench's reproduce line bundles it (npx esbuild ...), through esbuild's API: no npx here.
  if [ ! -f "$WORK/bench-built" ]; then
    node -e '
      require("esbuild").buildSync({ entryPoints: ["bench/train.ts"], bundle: true, platform: "node", format: "esm",
        packages: "external", outfile: process.argv[1], logLevel: "warning" })' "$ROOT/node_modules/.cache/train-bench.mjs" || exit 1
    touch "$WORK/bench-built"
  fi
  node "$ROOT/node_modules/.cache/train-bench.mjs" --backends "$BACKEND" --configs "$LLAMA" --llama-dir "$WORK" "$@"
}
export -f bench

summarize() {
  # The table's rows as plain figures: tokens/s, MFU, peak memory.
  awk -F'|' '/^\| llama/ && $5 ~ /[0-9]/ {
    gsub(/^ +| +$/, "", $3); gsub(/ /, "", $5); gsub(/ /, "", $7); gsub(/ /, "", $10)
    gsub(/^ +| +$/, "", $2); gsub(/ /, "", $4)
    printf "  %s %s on %s: %s tokens/s, MFU %s, peak memory %s MiB\n", $2, $4, $3, $5, ($7 == "" ? "n/a (CPU)" : $7), $10 }'
}
export -f summarize

llama_lora() {
  bench --kinds lora --steps 6 | tee "$WORK/llama-lora.out"
  grep -q '^| llama.*| lora |' "$WORK/llama-lora.out" || exit 1
  echo
  echo "summary:"
  summarize <"$WORK/llama-lora.out"
  grep -q 'lora | failed' "$WORK/llama-lora.out" && exit 1
  exit 0
}
export -f llama_lora

llama_qlora() {
  bench --kinds qlora --steps 3 --no-bare | tee "$WORK/llama-qlora.out"
  grep -q '^| llama.*| qlora | [0-9]' "$WORK/llama-qlora.out" || exit 1
  echo
  echo "summary:"
  summarize <"$WORK/llama-qlora.out"
  grep -A3 '^## QLoRA base weights' "$WORK/llama-qlora.out" | tail -n +2 | sed 's/^/  /'
}
export -f llama_qlora

# 6: the quickstart's adapter through PEFT.
peft_load() {
  q=$WORK/quickstart/out/quickstart
  [ -d "$q/adapter" ] && [ -d "$q/base" ] && [ -d "$q/merged" ] || { echo "no quickstart exports (part 3 failed)"; exit 1; }
  python3 -W ignore - "$q" <<'EOF'
import sys, torch
from peft import PeftModel
from transformers import AutoModelForCausalLM
q = sys.argv[1]
device = "cuda" if torch.cuda.is_available() else "cpu"
torch.backends.cuda.matmul.allow_tf32 = False
load = lambda p: AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32, local_files_only=True).to(device).eval()
base = load(f"{q}/base")
plain = load(f"{q}/base")
model = PeftModel.from_pretrained(base, f"{q}/adapter", local_files_only=True).eval()
lora = sum(1 for n, _ in model.named_modules() if n.endswith("lora_A"))
print(f"loaded: PeftModel.from_pretrained({q}/adapter) on {q}/base, {lora} LoRA modules, on {device}")
merged = load(f"{q}/merged")
ids = torch.tensor([[1, 403, 407, 261, 378, 280, 373, 259, 395, 263, 291, 365, 289, 46, 300, 500]], device=device)
with torch.no_grad():
    a, m, b = model(input_ids=ids).logits, merged(input_ids=ids).logits, plain(input_ids=ids).logits
diff = (a - m).abs().max().item()
effect = (b - m).abs().max().item()
print(f"max |logits(peft) - logits(merged export)| = {diff:.3g}; the adapter's own effect, max |base - merged| = {effect:.3g}")
if not (diff < 1e-3 and effect > 1e-2):
    sys.exit("the PEFT-loaded adapter does not give the merged export's logits")
print("ok: the adapter loads with peft and matches the merged export")
EOF
}
export -f peft_load

echo "tunegraph GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown); work dir $WORK"
part runtime 35 runtime
[ -f "$WORK/env" ] && export "$(cat "$WORK/env")"
if ! command -v node >/dev/null; then
  echo "no node: the parts that need it cannot run"
fi
GPU=0
timeout 90 python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null && GPU=1
if [ "$GPU" = 1 ]; then
  BACKEND=torch-cuda LLAMA=llama1b
elif [ "$CPU" = 1 ]; then
  BACKEND=torch-cpu LLAMA=llama-tiny
  echo
  echo "dry run (--cpu): no CUDA device; the quickstart runs on torch-cpu and llama1b is replaced by llama-tiny"
else
  BACKEND="" LLAMA=""
  echo
  echo "no CUDA device: skipping the quickstart on torch-cuda, llama1b LoRA, QLoRA memory and the PEFT load (--cpu runs them on torch-cpu)"
fi
export BACKEND LLAMA
part device 35 device
if [ -n "$BACKEND" ]; then
  part quickstart 100 quickstart
  part llama-lora 140 llama_lora
  part llama-qlora 120 llama_qlora
  part peft 40 peft_load
else
  for n in quickstart llama-lora llama-qlora peft; do SUMMARY+=("$(printf '%-11s %s' "$n" "skipped (no CUDA device)")"); done
fi
rm -rf "$WORK/llama1b" "$WORK/llama-tiny"

echo
echo "=== summary ($([ "$GPU" = 1 ] && echo "GPU" || echo "no GPU$([ "$CPU" = 1 ] && echo ", --cpu dry run")")) ==="
for s in "${SUMMARY[@]}"; do echo "  $s"; done
total=$(($(date +%s) - START))
echo "total wall time: $((total / 60)) min $((total % 60)) s; logs in $WORK"
for s in "${SUMMARY[@]}"; do
  case "$s" in *FAILED*) exit 1 ;; esac
done
exit 0
