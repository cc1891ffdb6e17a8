"""Prepare the JSON schemas kubeconform needs, fully offline after the first run.

Called by k8s/validate.sh. Three kinds of schema end up in the cache folder (git-ignored):

- kubernetes/vX.Y.Z/   the built-in resources' schemas shipped by the PyPI package `kubernetes-validate`
                       (`vX.Y.Z-local-strict`), with their `/api/_definitions.json#` refs rewritten to the
                       relative `_definitions.json#` and their remote `$id` dropped, so kubeconform
                       resolves every ref from the same local folder;
- crds/<group>/        custom resources' schemas converted from the operators' released CRD files listed in
                       k8s/crds.lock, fetched from a package registry and checked against the sha256 there;
- envelope/vX.Y.Z/     for the kinds crds.lock lists as [[unavailable]] only: apiVersion, kind and
                       metadata (the real ObjectMeta schema); their spec cannot be checked. Nothing else.

Prints one line per source, raises SystemExit with a clear message on any failure.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import yaml

OBJECT_META_REF = "_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


def fail(message: str) -> None:
    raise SystemExit(f"schemas: {message}")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- built-in Kubernetes schemas --------------------------------------------------------------------


def prepare_kubernetes(cache: Path, version: str) -> Path:
    """Copy `vX.Y.Z-local-strict` out of kubernetes-validate with its absolute refs made relative."""
    try:
        import kubernetes_validate
    except ImportError:
        fail("the PyPI package kubernetes-validate is not installed in this Python (run `make install`)")
    package_version = importlib.metadata.version("kubernetes-validate")
    source = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{version}-local-strict"
    if not source.is_dir():
        fail(f"kubernetes-validate {package_version} ships no schemas for Kubernetes {version} ({source})")
    target = cache / "kubernetes" / f"v{version}"
    stamp = target / ".source"
    if stamp.is_file() and stamp.read_text() == f"kubernetes-validate {package_version} (no $id)\n":
        return target
    shutil.rmtree(target, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".k8s-"))
    for path in source.glob("*.json"):
        schema = json.loads(path.read_text().replace('"/api/_definitions.json#', '"_definitions.json#'))
        # an `$id` (https://kubernetes.io/api/...) would make refs resolve against that remote base
        schema.pop("$id", None)
        (tmp / path.name).write_text(json.dumps(schema))
    (tmp / ".source").write_text(f"kubernetes-validate {package_version} (no $id)\n")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(target)
    print(f"schemas: Kubernetes {version} from kubernetes-validate {package_version} -> {target}")
    return target


# --- CRD sources --------------------------------------------------------------------------------------


def run(cmd: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    try:
        done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        fail(f"`{cmd[0]}` is not installed or not on PATH (needed for: {' '.join(cmd)})")
    if done.returncode != 0:
        fail(f"`{' '.join(cmd)}` failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout


def fetch_go_module(source: dict[str, Any], workdir: Path) -> Path:
    """`go mod download` the operator's repository as a Go module; the CRD file sits in its tree."""
    env = dict(os.environ, GO111MODULE="on", GOFLAGS="-mod=mod")
    out = run(
        ["go", "mod", "download", "-json", f"{source['module']}@{source['version']}"], cwd=workdir, env=env
    )
    info = json.loads(out)
    if info.get("Error"):
        fail(f"go mod download {source['module']}@{source['version']}: {info['Error']}")
    if source.get("go_sum") and info.get("Sum") != source["go_sum"]:
        fail(
            f"{source['module']}@{source['version']}: module sum {info.get('Sum')} != crds.lock {source['go_sum']}"
        )
    return Path(info["Dir"]) / source["path"]


def find_java(min_major: int) -> str:
    """A `java` of at least `min_major`: $JAVA_HOME, PATH, then the JDKs under /usr/lib/jvm."""
    candidates = []
    if os.environ.get("JAVA_HOME"):
        candidates.append(str(Path(os.environ["JAVA_HOME"]) / "bin" / "java"))
    if shutil.which("java"):
        candidates.append(shutil.which("java") or "java")
    candidates += sorted(str(p) for p in Path("/usr/lib/jvm").glob("*/bin/java"))
    for java in candidates:
        try:
            done = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
        except OSError:
            continue
        first = (done.stderr or done.stdout).splitlines()[:1]
        if not first or '"' not in first[0]:
            continue
        version = first[0].split('"')[1]
        major = int(version.split(".")[0]) if not version.startswith("1.") else int(version.split(".")[1])
        if major >= min_major:
            return java
    fail(f"no Java >= {min_major} found (JAVA_HOME, PATH, /usr/lib/jvm/*); Strimzi's CRD generator needs it")
    return ""  # unreachable


def fetch_maven_generated(source: dict[str, Any], cache: Path, workdir: Path) -> Path:
    """Strimzi publishes no CRD YAML to Maven Central, but publishes the API classes and its own CRD
    generator there; running that generator with the arguments of Strimzi's build reproduces the released
    `packaging/install/cluster-operator/04x-Crd-*.yaml` byte for byte (the sha256 in crds.lock is the
    released file's, so any difference fails here)."""
    jar_dir = cache / "jars"
    jar_dir.mkdir(parents=True, exist_ok=True)
    classpath = []
    for artifact in source["artifacts"]:
        group, name, version = artifact["coordinates"].split(":")
        jar = jar_dir / f"{name}-{version}.jar"
        if not jar.is_file() or sha256_of(jar) != artifact["sha256"]:
            run(
                [
                    "mvn", "-q", "-B", "dependency:copy", f"-Dartifact={group}:{name}:{version}",
                    f"-DoutputDirectory={jar_dir}", "-Dmdep.overWriteReleases=true",
                ],
                cwd=workdir,
            )  # fmt: skip
        if sha256_of(jar) != artifact["sha256"]:
            fail(f"{artifact['coordinates']}: sha256 {sha256_of(jar)} != crds.lock {artifact['sha256']}")
        classpath.append(str(jar))
    out_dir = cache / "generated" / source["name"]
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / Path(source["path"]).name
    if not output.is_file() or sha256_of(output) != source["sha256"]:
        java = find_java(int(source.get("java_min", 21)))
        run(
            [
                java,
                "-cp",
                os.pathsep.join(classpath),
                source["main"],
                *source["args"],
                f"{source['class']}={output}",
            ]
        )
    return output


def fetch_crd(source: dict[str, Any], cache: Path, workdir: Path) -> Path:
    registry = source["registry"]
    if registry == "go-module-proxy":
        path = fetch_go_module(source, workdir)
    elif registry == "maven-central":
        path = fetch_maven_generated(source, cache, workdir)
    else:
        fail(f"{source['name']}: unknown registry {registry!r} in crds.lock")
    if not path.is_file():
        fail(f"{source['name']}: {path} is missing from the fetched package")
    digest = sha256_of(path)
    if digest != source["sha256"]:
        fail(f"{source['name']}: sha256 of {path} is {digest}, crds.lock says {source['sha256']}")
    return path


# --- CRD -> JSON schema ------------------------------------------------------------------------------

SCHEMA_MAPS = ("properties", "patternProperties", "definitions")
SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
SCHEMA_VALUES = ("items", "additionalProperties", "not", "additionalItems")


def to_json_schema(node: Any, *, strict: bool) -> Any:
    """OpenAPI v3 (structural CRD schema) -> JSON schema, walking only schema positions.

    As kubeconform's openapi2jsonschema does: int-or-string becomes a type union, `nullable` adds "null",
    and in strict mode an object with `properties` rejects unknown fields unless it keeps them on
    purpose (`x-kubernetes-preserve-unknown-fields`)."""
    if not isinstance(node, dict):
        return node
    out = {k: v for k, v in node.items() if k not in SCHEMA_MAPS + SCHEMA_LISTS + SCHEMA_VALUES}
    for key in SCHEMA_MAPS:
        if key in node:
            out[key] = {name: to_json_schema(sub, strict=strict) for name, sub in node[key].items()}
    for key in SCHEMA_LISTS:
        if key in node:
            out[key] = [to_json_schema(sub, strict=strict) for sub in node[key]]
    for key in SCHEMA_VALUES:
        if key in node:
            value = node[key]
            out[key] = (
                [to_json_schema(v, strict=strict) for v in value]
                if isinstance(value, list)
                else (to_json_schema(value, strict=strict))
            )
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if out.get("format") == "int-or-string":
        out.pop("format")
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if (
        strict
        and "properties" in out
        and "additionalProperties" not in out
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def convert_crd(crd_path: Path, target_root: Path, expected_kinds: list[str]) -> list[str]:
    """Write one `<group>/<kind>_<version>.json` per served version; returns the paths written."""
    written: list[str] = []
    kinds: set[str] = set()
    for doc in yaml.safe_load_all(crd_path.read_text()):
        if not doc or doc.get("kind") != "CustomResourceDefinition":
            continue
        spec = doc["spec"]
        kind, group = spec["names"]["kind"], spec["group"]
        for version in spec["versions"]:
            if not version.get("served", True):
                continue
            schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
            schema = to_json_schema(schema, strict=True)
            props = schema.setdefault("properties", {})
            props["apiVersion"] = {"type": "string", "enum": [f"{group}/{version['name']}"]}
            props["kind"] = {"type": "string", "enum": [kind]}
            out = target_root / group / f"{kind.lower()}_{version['name']}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(schema, indent=1, sort_keys=True))
            written.append(str(out.relative_to(target_root)))
            kinds.add(kind)
    missing = [k for k in expected_kinds if k not in kinds]
    if missing:
        fail(f"{crd_path}: no served version of {missing}")
    return written


# --- envelope for unavailable CRDs ---------------------------------------------------------------------


def write_envelope(cache: Path, k8s_version: str, entry: dict[str, Any]) -> None:
    """apiVersion/kind/metadata only: the operator's CRD could not be had, so its spec is not checked."""
    group, version, kind = entry["group"], entry["version"], entry["kind"]
    target = cache / "envelope" / f"v{k8s_version}"
    target.mkdir(parents=True, exist_ok=True)
    schema = {
        "description": f"{kind}: CRD unavailable from registries (see k8s/crds.lock); envelope only",
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"type": "string", "enum": [f"{group}/{version}"]},
            "kind": {"type": "string", "enum": [kind]},
            "metadata": {"$ref": f"../../kubernetes/v{k8s_version}/{OBJECT_META_REF}"},
            "spec": {"type": "object"},
        },
        "additionalProperties": False,
    }
    # same file name kubeconform derives for built-in kinds: {kind}-{first label of group}-{version}.json
    name = f"{kind.lower()}-{group.split('.')[0]}-{version}.json"
    (target / name).write_text(json.dumps(schema, indent=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lock", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--kubernetes-version", action="append", required=True)
    args = parser.parse_args(argv)
    cache: Path = args.cache.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    lock = tomllib.loads(args.lock.read_text())
    for version in args.kubernetes_version:
        prepare_kubernetes(cache, version)
    crd_root = cache / "crds"
    with tempfile.TemporaryDirectory(prefix="crd-fetch-") as workdir:
        for source in lock.get("crd", []):
            # a stamp records which CRD (by sha256) produced which schema files; reuse them while both hold
            stamp = crd_root / ".stamps" / f"{source['name']}.json"
            if stamp.is_file():
                seen = json.loads(stamp.read_text())
                if seen["sha256"] == source["sha256"] and all(
                    (crd_root / f).is_file() for f in seen["files"]
                ):
                    continue
            path = fetch_crd(source, cache, Path(workdir))
            files = convert_crd(path, crd_root, source["kinds"])
            stamp.parent.mkdir(parents=True, exist_ok=True)
            stamp.write_text(json.dumps({"sha256": source["sha256"], "files": files}))
            print(
                f"schemas: {source['name']} {source['version']} ({source['registry']}) -> {', '.join(files)}"
            )
    for entry in lock.get("unavailable", []):
        for version in args.kubernetes_version:
            write_envelope(cache, version, entry)
        print(
            f"schemas: WARNING {entry['kind']} ({entry['group']}/{entry['version']}): operator CRD not obtainable "
            "from any registry; apiVersion/kind/metadata checked, spec NOT checked (see k8s/crds.lock)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
