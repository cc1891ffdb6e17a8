"""Leading `//` comments of the .proto sources, by full name, for the OpenAPI descriptions.

The generated *_pb2 modules carry no source comments, so the gateway reads them from protos/ when
it is there (a deployment without it simply gets an API reference without prose). The parser knows
the layout buf format writes: one declaration per line, comments directly above it.
"""

from __future__ import annotations

import re
from pathlib import Path

_PACKAGE = re.compile(r"^package\s+([\w.]+)\s*;")
_BLOCK = re.compile(r"^(service|message|enum)\s+(\w+)\s*\{")
_RPC = re.compile(r"^rpc\s+(\w+)\s*\(")
_FIELD = re.compile(r"^(?:optional\s+|repeated\s+)?(?:map<[^>]+>|[\w.]+)\s+(\w+)\s*=\s*-?\d+")
_ENUM_VALUE = re.compile(r"^(\w+)\s*=\s*-?\d+")


def _clean(lines: list[str]) -> str:
    return "\n".join(line.strip() for line in lines).strip()


def parse_file(text: str) -> dict[str, str]:
    """Full name (package.Message, package.Message.field, package.Service.Rpc) -> comment."""
    docs: dict[str, str] = {}
    package = ""
    scopes: list[tuple[str, str]] = []  # (kind, name); kind "" for other braces (options, rpc bodies)
    pending: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("//"):
            pending.append(line[2:].removeprefix(" "))
            continue
        comment, pending = _clean(pending), []
        if not line:
            continue
        prefix = ".".join([package, *(name for kind, name in scopes if kind)]).strip(".")
        kind = scopes[-1][0] if scopes else ""
        code = line.split("//")[0]
        if match := _PACKAGE.match(line):
            package = match.group(1)
        elif match := _BLOCK.match(line):
            if comment:
                docs[f"{prefix}.{match.group(2)}".strip(".")] = comment
            scopes.append((match.group(1), match.group(2)))
            code = code.split("{", 1)[1]  # that brace opened the block just pushed
        elif kind == "service" and (match := _RPC.match(line)):
            if comment:
                docs[f"{prefix}.{match.group(1)}"] = comment
        elif kind == "message" and (match := _FIELD.match(line)):
            if comment:
                docs[f"{prefix}.{match.group(1)}"] = comment
        elif kind == "enum" and (match := _ENUM_VALUE.match(line)):
            if comment:
                docs[f"{prefix}.{match.group(1)}"] = comment
        for char in code:
            if char == "{":
                scopes.append(("", ""))
            elif char == "}" and scopes:
                scopes.pop()
    return docs


def load_comments(protos_dir: Path) -> dict[str, str]:
    docs: dict[str, str] = {}
    if not protos_dir.is_dir():
        return docs
    for path in sorted(protos_dir.glob("shop/**/*.proto")):
        docs.update(parse_file(path.read_text()))
    return docs
