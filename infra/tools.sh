#!/usr/bin/env bash
# Installs the command-line tools the Makefile and tests use, pinned by version:
#   .tools/bin  <- Go tools via `go install` (grpcurl, ghz, kustomize, kubeconform)
#   node_modules <- buf and swagger-ui-dist via `npm ci` (package-lock.json pins them)
#   promtool    <- Debian's `prometheus` package (`go install` of promtool is refused: its go.mod has
#                  exclude directives)
# Each step is skipped when the pinned version is already there, so a warm run takes a second.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export GOBIN="$root/.tools/bin" GOTOOLCHAIN=local GOFLAGS=-mod=mod
mkdir -p "$GOBIN"

go_tools=(
  "grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3"
  "ghz github.com/bojand/ghz/cmd/ghz@v0.121.0"
  "kustomize sigs.k8s.io/kustomize/kustomize/v5@v5.7.1"
  "kubeconform github.com/yannh/kubeconform/cmd/kubeconform@v0.7.0"
)
pids=()
for entry in "${go_tools[@]}"; do
  read -r name pkg <<<"$entry"
  stamp="$GOBIN/.$name-${pkg##*@}"
  if [[ -x "$GOBIN/$name" && -f "$stamp" ]]; then continue; fi
  echo "tools: go install $pkg"
  ( go install "$pkg" >"$GOBIN/.$name.log" 2>&1 && touch "$stamp" ) || { cat "$GOBIN/.$name.log"; exit 1; } &
  pids+=($!)
done

if [[ ! -x node_modules/.bin/buf ]] || ! cmp -s package-lock.json node_modules/.package-lock.json 2>/dev/null; then
  echo "tools: npm ci (buf, swagger-ui-dist)"
  npm ci --no-audit --no-fund --loglevel=error
fi

# Debian packages: promtool (alert rule tests), chromium (the /docs browser test), wrk (HTTP bench)
apt_missing=()
command -v promtool >/dev/null 2>&1 || apt_missing+=(prometheus)
command -v chromium >/dev/null 2>&1 || apt_missing+=(chromium)
command -v wrk >/dev/null 2>&1 || apt_missing+=(wrk)
if ((${#apt_missing[@]})); then
  echo "tools: apt-get install ${apt_missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if [[ $(id -u) -eq 0 ]]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get install -y -q --no-install-recommends "${apt_missing[@]}" >/dev/null 2>&1 \
    || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q --no-install-recommends "${apt_missing[@]}" >/dev/null; }
  # the prometheus package would start a server on :9090 where an init system runs; we only want promtool
  $sudo pkill -x prometheus 2>/dev/null || true
fi

for pid in "${pids[@]}"; do wait "$pid"; done
echo "tools: ready ($(ls "$GOBIN" | tr '\n' ' '))"
