"""`${...}` templating, as DVC's dvc.yaml does it: values from params files and `vars`, `foreach`/`matrix` items.

`${a.b[0].c}` selects from a context of mappings. A string that is exactly one `${}` takes the value's
type (`${epochs}` is the number 10); inside other text a value becomes text (`true`/`false` for booleans);
`\\${` is a literal `${`. A mapping is allowed only in a command, where it unpacks to `--key value` options
(DVC's dictionary unpacking). Values that came from a params file are *tracked*: the caller adds them to the
target's params, so `--param` and `--sweep` reach them and the value is keyed where it is used.

BUILD.yaml uses the same syntax *leniently*: only a `${}` whose first name the context defines (a selected
param, a foreach/matrix `item` or `key`) is replaced; any other `${...}` (`${HOME}`, `${#TOKEN}`) and `\\${` are
left for the shell as they are.
"""

from __future__ import annotations

import itertools
import re
import shlex

from buildml.errors import LoadError

KEYCRE = re.compile(r"(?<!\\)\$\{(?P<inner>.*?)\}")
_PART = re.compile(r"[^.\[\]]+")
_SCALARS = (str, int, float, bool)


class Context:
    """Values by name, each top-level name remembering the params file it came from (None for vars/items)."""

    def __init__(self):
        self.data: dict = {}
        self.source: dict = {}  # top-level name -> params file (workspace-relative) or None
        self.tracked: dict = {}  # params file -> [dotted keys used]

    def merge(self, values: dict, source: str | None, where, what: str) -> None:
        """Add values (a params file's, or a vars mapping); a name given twice with different values is an error."""
        for key, value in values.items():
            if key in self.data and self.data[key] != value:
                if isinstance(self.data[key], dict) and isinstance(value, dict):
                    merged = dict(self.data[key])
                    for k, v in value.items():
                        if k in merged and merged[k] != v:
                            raise LoadError(f"{what} sets {key}.{k}, which is already set to another value",
                                            location=where, hint="each templated name may be defined once")
                        merged[k] = v
                    self.data[key] = merged
                    continue
                raise LoadError(f"{what} sets {key!r}, which is already set to another value", location=where,
                                hint="each templated name may be defined once")
            self.data[key] = value
            self.source.setdefault(key, source)

    def child(self, values: dict) -> "Context":
        """A copy with values (foreach/matrix `item` and `key`) set on top, untracked."""
        ctx = Context()
        ctx.data, ctx.source, ctx.tracked = {**self.data, **values}, dict(self.source), self.tracked
        for key in values:
            ctx.source[key] = None
        return ctx

    def defines(self, expr: str) -> bool:
        """True when expr is a name like a.b whose first part is in this context."""
        expr = expr.strip()
        return bool(_NAME_EXPR.fullmatch(expr)) and _PART.findall(expr)[0] in self.data

    def select(self, expr: str, where, track: bool):
        parts = _parts(expr, where)
        node = self.data
        for i, part in enumerate(parts):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                shown = ".".join(parts[:i + 1])
                raise LoadError(f"${{{expr}}}: {shown!r} is not defined", location=where,
                                hint="templated values come from params.yaml, vars: and foreach/matrix items; "
                                     "names defined: " + (", ".join(sorted(map(str, self.data))) or "none"))
        source = self.source.get(parts[0])
        if track and source is not None:
            keys = self.tracked.setdefault(source, [])
            dotted = ".".join(parts)
            if dotted not in keys:
                keys.append(dotted)
        return node


_NAME_EXPR = re.compile(r"[^.\[\]\s]+(\.[^.\[\]\s]+|\[[^\[\]\s]+\])*")


def _parts(expr: str, where) -> list[str]:
    expr = expr.strip()
    if not expr or not _NAME_EXPR.fullmatch(expr):
        raise LoadError(f"${{{expr}}} is not a name like a.b or a[0].c", location=where,
                        hint="write ${name}, ${section.key} or ${list[0]}")
    return _PART.findall(expr)


def has_template(value) -> bool:
    if isinstance(value, str):
        return bool(KEYCRE.search(value))
    if isinstance(value, dict):
        return any(has_template(k) or has_template(v) for k, v in value.items())
    if isinstance(value, list):
        return any(map(has_template, value))
    return False


def resolve(value, ctx: Context, where, field: str, track: bool = True, locate=None, lenient: bool = False):
    """value with every `${}` replaced; `locate(path)` gives the location of a nested part (for errors);
    lenient (BUILD.yaml) replaces only the names ctx defines."""
    locate = locate or (lambda path: where)

    def walk(v, path):
        if isinstance(v, str):
            return resolve_str(v, ctx, locate(path), field, track, lenient)
        if isinstance(v, dict):
            return {walk(k, path) if isinstance(k, str) else k: walk(x, path + (k,)) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x, path + (i,)) for i, x in enumerate(v)]
        return v

    return walk(value, ())


def resolve_str(text: str, ctx: Context, where, field: str, track: bool = True, lenient: bool = False):
    matches = list(KEYCRE.finditer(text))
    if lenient:
        matches = [m for m in matches if ctx.defines(m["inner"])]
        if not matches:
            return text
    if not matches:
        return text.replace("\\${", "${")
    if len(matches) == 1 and matches[0].group(0) == text:
        value = ctx.select(matches[0]["inner"], where, track)
        if field == "command" and isinstance(value, dict):
            return unpack(value, where)
        return _checked(value, text, where, field)
    out, index = [], 0
    for match in matches:
        value = ctx.select(match["inner"], where, track)
        out.append(text[index:match.start()])
        out.append(unpack(value, where) if field == "command" and isinstance(value, dict)
                   else to_text(_checked(value, match.group(0), where, field)))
        index = match.end()
    out.append(text[index:])
    return "".join(out) if lenient else "".join(out).replace("\\${", "${")


def _checked(value, expr: str, where, field: str):
    if value is None or isinstance(value, _SCALARS) or field in ("foreach", "matrix"):
        return value
    raise LoadError(f"{expr} is a {'mapping' if isinstance(value, dict) else 'list'}, which cannot be put in {field}",
                    location=where, hint="select a single value, e.g. ${section.key}; only a command unpacks a "
                                         "mapping into --key value options")


def to_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def unpack(mapping: dict, where) -> str:
    """A mapping as command-line options, as DVC writes it: `--k v`, `--flag` for true, lists as `--k a b`."""
    parts = []
    for key, value in _flatten(mapping).items():
        if isinstance(value, bool):
            if value:
                parts.append(f"--{key}")
        elif isinstance(value, str):
            parts.append(f"--{key} {shlex.quote(value)}")
        elif isinstance(value, list):
            items = []
            for item in value:
                if isinstance(item, (list, dict)):
                    raise LoadError(f"cannot unpack the nested list {key!r} into options", location=where)
                items.append(shlex.quote(item) if isinstance(item, str) else str(item))
            if items:
                parts.append(f"--{key} " + " ".join(items))
        else:
            parts.append(f"--{key} {value}")
    return " ".join(parts)


def _flatten(mapping: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def expand(name: str, definition: dict, ctx: Context, where, locate) -> list[tuple[str, dict, Context, tuple]]:
    """[(target name, body, context, body's key path)] of one entry: itself, or what its foreach/matrix makes.

    Names follow DVC: `name@value` for a list of values, `name@key` for a mapping, `name@0` for a list of
    mappings or lists, and `name@a-1` for a matrix (a non-scalar matrix value is named `<dimension><index>`).
    """
    if "foreach" in definition and "matrix" in definition:
        raise LoadError(f"{name!r} has both foreach and matrix", location=where, hint="use one of them")
    if "foreach" in definition:
        extra = set(definition) - {"foreach", "do"}
        if "do" not in definition or extra:
            raise LoadError(f"{name!r}: a foreach entry holds `foreach:` and `do:` only"
                            + (f" (not {', '.join(sorted(map(str, extra)))})" if extra else ""),
                            location=where, hint="put the target's fields under do:")
        items = resolve(definition["foreach"], ctx, locate(("foreach",)), "foreach", track=False)
        body = definition["do"]
        if not isinstance(body, dict):
            raise LoadError(f"{name}.do must be a mapping of fields", location=locate(("do",)))
        if isinstance(items, dict):
            pairs = [(to_text(k), {"item": v, "key": k}) for k, v in items.items()]
        elif isinstance(items, list):
            composite = any(isinstance(v, (dict, list)) for v in items)
            pairs = [(str(i) if composite else to_text(v), {"item": v}) for i, v in enumerate(items)]
        else:
            raise LoadError(f"{name}.foreach must be a list or a mapping, got {type(items).__name__}",
                            location=locate(("foreach",)), hint="e.g. foreach: [a, b]  or  foreach: ${models}")
        return [(f"{name}@{key}", body, ctx.child(values), ("do",)) for key, values in pairs]
    if "matrix" in definition:
        matrix = resolve(definition["matrix"], ctx, locate(("matrix",)), "matrix", track=False)
        if not isinstance(matrix, dict) or not matrix or not all(isinstance(v, list) and v for v in matrix.values()):
            raise LoadError(f"{name}.matrix must map each dimension to a non-empty list", location=locate(("matrix",)),
                            hint="e.g. matrix: {model: [cnn, xgb], lr: [0.1, 0.01]}")
        body = {k: v for k, v in definition.items() if k != "matrix"}
        made = []
        dims = list(matrix)
        for combination in itertools.product(*(list(enumerate(matrix[d])) for d in dims)):
            item = {d: v for d, (_, v) in zip(dims, combination)}
            key = "-".join(f"{d}{i}" if isinstance(v, (dict, list)) else to_text(v)
                           for d, (i, v) in zip(dims, combination))
            made.append((f"{name}@{key}", body, ctx.child({"item": item}), ()))
        return made
    return [(name, definition, ctx, ())]
