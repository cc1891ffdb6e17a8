#!/usr/bin/env bash
# Regenerate the Python code for every shop/**/*.proto from scratch.
#
#   bash protos/generate.sh            # writes generated/ (what `make protos` runs)
#   bash protos/generate.sh OUT_DIR    # writes OUT_DIR instead (the freshness test uses this)
#
# google/api/*.proto and google/protobuf/*.proto are only include paths: their Python modules come
# from googleapis-common-protos and protobuf at run time, so they are never generated here.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/generated}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"

if [[ ! -x "$PY" ]]; then
  echo "generate.sh: $PY not found; run 'make install' first" >&2
  exit 1
fi

# Where googleapis-common-protos installed google/api/*.proto (the same files as protos/third_party).
GOOGLEAPIS="$("$PY" - <<'EOF'
import pathlib

import google.api.annotations_pb2 as m

print(pathlib.Path(m.__file__).resolve().parents[2])
EOF
)"

cd "$ROOT/protos"
mapfile -t PROTOS < <(find shop -name '*.proto' | LC_ALL=C sort)

rm -rf "$OUT/shop"
mkdir -p "$OUT"
"$PY" -m grpc_tools.protoc \
  -I . \
  -I "$GOOGLEAPIS" \
  --python_out="$OUT" \
  --pyi_out="$OUT" \
  --grpc_python_out="$OUT" \
  "${PROTOS[@]}"

# Regular packages (not namespace packages) so `import shop.x.v1.y_pb2` and setuptools both work.
find "$OUT/shop" -type d -print0 | while IFS= read -r -d '' dir; do
  : >"$dir/__init__.py"
done

echo "generated ${#PROTOS[@]} proto files into $OUT/shop"
