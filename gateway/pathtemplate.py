"""`google.api.http` path templates, parsed and matched exactly (including custom verbs).

Grammar (google/api/http.proto):
    Template = "/" Segments [ Verb ] ;  Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;  Variable = "{" FieldPath [ "=" Segments ] "}" ;
    Verb     = ":" LITERAL ;

Matching runs on the raw (still percent-encoded) request path, so a single-segment variable never
contains "/" or ":" unless the client encoded it (%2F, %3A). That is what keeps
`/v1/products/{product_id}` from swallowing `/v1/products/7:alsoBought`, whatever order the routes
are tried in. Captured values are percent-decoded.
"""

from __future__ import annotations

import dataclasses
import re
from urllib.parse import unquote

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_LITERAL = re.compile(r"[A-Za-z0-9._~!$&'()+,;=@-]+$")
_ONE_SEGMENT = r"[^/:]+"
_MANY_SEGMENTS = r"[^:]+"


class TemplateError(ValueError):
    pass


class PathValueError(ValueError):
    """A path variable whose percent-decoding is not UTF-8 (`/v1/orders/%FF`)."""

    def __init__(self, variable: str) -> None:
        super().__init__(f"path parameter {variable!r} is not valid UTF-8")
        self.variable = variable


@dataclasses.dataclass(frozen=True)
class PathTemplate:
    template: str
    variables: tuple[str, ...]  # field paths, in order
    verb: str
    literal_count: int  # for ordering when several templates could match
    _regex: re.Pattern[str]

    def match(self, raw_path: str) -> dict[str, str] | None:
        """Field path -> decoded value, or None when the path does not match."""
        found = self._regex.fullmatch(raw_path)
        if found is None:
            return None
        decoded = {}
        for name, value in zip(self.variables, found.groups(), strict=True):
            try:  # strictly: the default put U+FFFD in the id and the service answered 404
                decoded[name] = unquote(value, errors="strict")
            except UnicodeDecodeError:
                raise PathValueError(name) from None
        return decoded

    @property
    def openapi_path(self) -> str:
        """The OpenAPI form: `{product_id}` variables, bindings such as `{name=shelves/*}` dropped."""
        return re.sub(r"\{([^}=]+)(=[^}]*)?\}", r"{\1}", self.template)


def _split_verb(template: str) -> tuple[str, str]:
    depth = 0
    for index in range(len(template) - 1, -1, -1):
        char = template[index]
        if char == "}":
            depth += 1
        elif char == "{":
            depth -= 1
        elif char == "/" and depth == 0:
            return template, ""
        elif char == ":" and depth == 0:
            return template[:index], template[index + 1 :]
    return template, ""


def _split_segments(path: str) -> list[str]:
    segments: list[str] = []
    depth = 0
    current = ""
    for char in path:
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        if char == "/" and depth == 0:
            segments.append(current)
            current = ""
        else:
            current += char
    segments.append(current)
    return segments


def _wildcard_regex(segments: list[str], template: str) -> tuple[str, int]:
    parts: list[str] = []
    literals = 0
    for segment in segments:
        if segment == "*":
            parts.append(_ONE_SEGMENT)
        elif segment == "**":
            parts.append(_MANY_SEGMENTS)
        elif _LITERAL.match(segment):
            parts.append(re.escape(segment))
            literals += 1
        else:
            raise TemplateError(f"{template}: bad segment {segment!r}")
    return "/".join(parts), literals


def parse_template(template: str) -> PathTemplate:
    if not template.startswith("/"):
        raise TemplateError(f"{template}: must start with '/'")
    path, verb = _split_verb(template)
    if verb and not _LITERAL.match(verb):
        raise TemplateError(f"{template}: bad verb {verb!r}")
    variables: list[str] = []
    parts: list[str] = []
    literal_count = 0
    for segment in _split_segments(path[1:]):
        if segment.startswith("{") and segment.endswith("}"):
            name, _, binding = segment[1:-1].partition("=")
            if not _IDENT.match(name):
                raise TemplateError(f"{template}: bad variable {name!r}")
            if name in variables:
                raise TemplateError(f"{template}: variable {name!r} bound twice")
            regex, literals = _wildcard_regex(_split_segments(binding), template) if binding else ("", 0)
            variables.append(name)
            parts.append(f"({regex or _ONE_SEGMENT})")
            literal_count += literals
        elif "{" in segment or "}" in segment:
            raise TemplateError(f"{template}: a variable must be a whole segment ({segment!r})")
        else:
            regex, literals = _wildcard_regex([segment], template)
            parts.append(regex)
            literal_count += literals
    pattern = "/" + "/".join(parts) + (":" + re.escape(verb) if verb else "")
    return PathTemplate(
        template=template,
        variables=tuple(variables),
        verb=verb,
        literal_count=literal_count + (1 if verb else 0),
        _regex=re.compile(pattern),
    )
