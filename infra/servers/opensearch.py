"""OpenSearch 2.19: the integ-test distribution zip plus the analysis-common and lang-painless modules."""

from __future__ import annotations

import hashlib
import re
import shutil
import zipfile
from pathlib import Path

import httpx

from infra.artifacts import ensure_maven_set, read_lock
from infra.procs import InfraError, java_home, make_dirs, read_pid, run
from infra.servers.base import Server

# The zip carries only transport-netty4. These are laid out like the full distribution's modules/ folder.
# analysis-common extends lang-painless, so painless must be present for analysis-common to load.
MODULES = {
    "lang-painless": {
        "description": "An easy, safe and fast scripting language for OpenSearch",
        "classname": "org.opensearch.painless.PainlessPlugin",
        "extended.plugins": "",
        "jars": ("lang-painless-", "opensearch-scripting-painless-spi-", "antlr4-runtime-", "asm-"),
        # the same grants as the module's plugin-metadata/plugin-security.policy in OpenSearch's sources
        "policy": 'grant {\n  permission java.lang.RuntimePermission "createClassLoader";\n'
        '  permission java.lang.RuntimePermission "getClassLoader";\n};\n',
    },
    "analysis-common": {
        "description": 'Adds "built in" analyzers to OpenSearch.',
        "classname": "org.opensearch.analysis.common.CommonAnalysisPlugin",
        "extended.plugins": "lang-painless",
        "jars": ("analysis-common-",),
        "policy": "",
    },
}
CLUSTER_NAME = "shopmesh-local"
_VERSIONED_JAR = re.compile(r"^(?P<base>.+?)-\d[\w.+-]*\.jar$")


def _jar_base(filename: str) -> str:
    match = _VERSIONED_JAR.match(filename)
    return match.group("base") if match else filename


class OpenSearch(Server):
    name = "opensearch"
    marker = "org.opensearch.bootstrap.OpenSearch"
    # `-d` writes the pidfile during bootstrap: after the JVM has started, 5-30 s on a loaded machine
    pidfile_grace_seconds = 120.0

    @property
    def port(self) -> int:
        return self.settings.opensearch_port

    @property
    def log_path(self) -> Path:
        return self.home / "logs" / f"{CLUSTER_NAME}.log"

    @property
    def launcher_log(self) -> Path:
        return self.home / "logs" / "launcher.log"

    def diagnostic_logs(self) -> list[Path]:
        return [self.launcher_log, self.log_path]

    @property
    def pidfile(self) -> Path:
        return self.home / "opensearch.pid"

    @property
    def config_dir(self) -> Path:
        return self.home / "config"

    def pid(self) -> int | None:
        return read_pid(self.pidfile)

    def install_dir(self) -> Path:
        """Unpack the zip and add the modules once per locked artifact set; later calls reuse it."""
        artifacts = ensure_maven_set("opensearch", self.settings.cache_dir)
        zips = sorted(artifacts.glob("opensearch-*.zip"))
        if len(zips) != 1:
            raise InfraError(f"opensearch: expected one distribution zip in {artifacts}, found {zips}")
        version = zips[0].stem.removeprefix("opensearch-")
        entries = sorted(f"{k} {n} {d}" for (k, n), d in read_lock().items() if n.startswith("opensearch/"))
        stamp_text = hashlib.sha256("\n".join(entries).encode()).hexdigest()
        target = self.settings.cache_dir / "opensearch" / f"opensearch-{version}"
        stamp = target / ".shopmesh-assembled"
        if stamp.exists() and stamp.read_text().strip() == stamp_text:
            return target
        print(f"infra: assembling OpenSearch {version} with modules {', '.join(MODULES)} in {target}")
        staging = target.parent / ".staging"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)
        with zipfile.ZipFile(zips[0]) as archive:
            archive.extractall(staging)
        unpacked = staging / f"opensearch-{version}"
        for script in (unpacked / "bin").iterdir():
            script.chmod(0o755)
        self._add_modules(unpacked, artifacts, version)
        run(["chmod", "-R", "a+rX", str(unpacked)], what="chmod opensearch install")
        unpacked.rename(target)
        shutil.rmtree(staging, ignore_errors=True)
        stamp.write_text(stamp_text + "\n")
        return target

    @staticmethod
    def _add_modules(install: Path, artifacts: Path, version: str) -> None:
        in_lib = {_jar_base(p.name) for p in (install / "lib").glob("*.jar")}
        for module, spec in MODULES.items():
            folder = install / "modules" / module
            folder.mkdir(parents=True)
            for jar in sorted(artifacts.glob("*.jar")):
                if not jar.name.startswith(spec["jars"]):
                    continue
                if _jar_base(jar.name) in in_lib:
                    # jar hell: OpenSearch refuses to start when a class is on the classpath twice
                    print(f"infra: not copying {jar.name} into modules/{module}: lib/ already has it")
                    continue
                shutil.copy2(jar, folder / jar.name)
            descriptor = {
                "description": spec["description"],
                "version": version,
                "name": module,
                "classname": spec["classname"],
                "java.version": "11",
                "opensearch.version": version,
                "custom.foldername": "",
                "extended.plugins": spec["extended.plugins"],
                "has.native.controller": "false",
            }
            (folder / "plugin-descriptor.properties").write_text(
                "".join(f"{key}={value}\n" for key, value in descriptor.items())
            )
            if spec["policy"]:
                (folder / "plugin-security.policy").write_text(spec["policy"])

    def _write_config(self, install: Path) -> None:
        logs, data = self.home / "logs", self.home / "data"
        make_dirs(self.config_dir / "jvm.options.d", logs, data, self.home / "tmp")
        options = []
        for line in (install / "config" / "jvm.options").read_text().splitlines():
            if re.match(r"^-Xm[sx]", line.strip()):
                continue  # the heap comes from OPENSEARCH_JAVA_OPTS
            line = line.replace("file=logs/gc.log", f"file={logs}/gc.log")
            line = line.replace("-XX:HeapDumpPath=data", f"-XX:HeapDumpPath={data}")
            line = line.replace("-XX:ErrorFile=logs/", f"-XX:ErrorFile={logs}/")
            options.append(line)
        (self.config_dir / "jvm.options").write_text("\n".join(options) + "\n")
        shutil.copy2(install / "config" / "log4j2.properties", self.config_dir / "log4j2.properties")
        (self.config_dir / "opensearch.yml").write_text(
            "# generated by infra/servers/opensearch.py; ports and paths are passed with -E at start\n"
            f"cluster.name: {CLUSTER_NAME}\nnode.name: {CLUSTER_NAME}-1\n"
        )

    def prepare(self) -> None:
        install = self.install_dir()
        self.run_as.make_reachable(self.home)
        self._write_config(install)
        self.run_as.own(self.home)

    def launch(self) -> None:
        install = self.install_dir()
        s = self.settings
        env = [
            f"OPENSEARCH_JAVA_HOME={java_home(s.java_home)}",
            f"OPENSEARCH_PATH_CONF={self.config_dir}",
            f"OPENSEARCH_TMPDIR={self.home / 'tmp'}",
            f"OPENSEARCH_JAVA_OPTS=-Xms{s.opensearch_heap} -Xmx{s.opensearch_heap}",
        ]
        settings = {
            "discovery.type": "single-node",
            "network.host": "127.0.0.1",
            "http.port": str(s.opensearch_port),
            "transport.port": str(s.opensearch_transport_port),
            "cluster.routing.allocation.disk.threshold_enabled": "false",
            "path.data": str(self.home / "data"),
            "path.logs": str(self.home / "logs"),
        }
        flags = [arg for key, value in settings.items() for arg in ("-E", f"{key}={value}")]
        run(
            self.run_as.wrap(["env", *env, str(install / "bin" / "opensearch"), "-d", "-p", str(self.pidfile),
                              *flags]),
            what="bin/opensearch -d", cwd=self.home, timeout=s.infra_ready_timeout_seconds,
            log=self.launcher_log,
        )  # fmt: skip

    def _client(self) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=5.0)

    def probe(self) -> None:
        with self._client() as client:
            health = client.get("/_cluster/health").raise_for_status().json()
        if health.get("status") not in {"green", "yellow"}:
            raise InfraError(f"opensearch: cluster health is {health.get('status')}")

    def after_ready(self) -> None:
        with self._client() as client:
            modules = {
                m["name"]
                for node in client.get("/_nodes/_local/plugins").raise_for_status().json()["nodes"].values()
                for m in node.get("modules", [])
            }
            missing = set(MODULES) - modules
            if missing:
                raise InfraError(f"opensearch: modules not loaded: {sorted(missing)}; see {self.log_path}")
            # One node can never hold a replica, so new indices default to 0 (shards already default to 1).
            # It must be a persistent cluster setting: as a node setting (-E) index creation ignores it.
            client.put(
                "/_cluster/settings", json={"persistent": {"cluster.default_number_of_replicas": 0}}
            ).raise_for_status()
            analyzed = client.post("/_analyze", json={"analyzer": "english", "text": "running shoes"})
            tokens = [t["token"] for t in analyzed.raise_for_status().json().get("tokens", [])]
            if tokens != ["run", "shoe"]:
                raise InfraError(
                    f"opensearch: english analyzer gave {tokens} for 'running shoes', not [run, shoe]"
                )
