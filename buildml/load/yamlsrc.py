"""Safe YAML loading that keeps file:line:column for every key and rejects duplicate keys."""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

from buildml.errors import LoadError, Location

try:  # the C parser is ~10x faster; fall back to pure Python where libyaml is missing
    _Loader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover
    _Loader = yaml.SafeLoader

MAX_NODES = 1_000_000  # aliases are expanded; this caps "billion laughs" documents
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"


@dataclass
class Document:
    """Plain data from one YAML file plus the location of each key path."""

    file: str
    data: object
    locations: dict = field(default_factory=dict)

    def where(self, path: tuple) -> Location:
        """Location of the deepest known prefix of `path`."""
        while path:
            loc = self.locations.get(path)
            if loc:
                return loc
            path = path[:-1]
        return self.locations.get((), Location(self.file, 1, 1))


def _loc(file: str, node) -> Location:
    mark = node.start_mark
    return Location(file, mark.line + 1, mark.column + 1)


class _Builder:
    def __init__(self, file: str):
        self.file = file
        self.locations: dict = {}
        self.count = 0
        self.constructor = yaml.constructor.SafeConstructor()
        self.built: dict = {}  # id(node) -> value: an alias shares what its anchor built, as PyYAML's loader does

    def build(self, node, path: tuple):
        self.count += 1
        if self.count > MAX_NODES:
            raise LoadError("document is too large or expands too many aliases", location=_loc(self.file, node),
                            hint=f"a BUILD file may hold at most {MAX_NODES} values after alias expansion")
        self.locations.setdefault(path, _loc(self.file, node))
        if id(node) in self.built:  # rebuilding it per alias costs ~13 us a value: seconds for an alias bomb under the cap
            return self.built[id(node)]
        self.built[id(node)] = value = self._build(node, path)
        return value

    def _build(self, node, path: tuple):
        if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in (_MAP, _SEQ):
            raise LoadError(f"unsupported YAML tag {node.tag!r}", location=_loc(self.file, node),
                            hint="BUILD files hold plain data: strings, numbers, lists and mappings")
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
        return self._scalar(node)

    def _scalar(self, node):
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError:
            raise  # it carries its own mark; load_yaml renders it
        except (ValueError, KeyError, IndexError, AttributeError, TypeError) as exc:
            # PyYAML's constructors fail this way on an explicit tag over a value it does not fit (`!!bool x`:
            # KeyError, `!!float ''`: IndexError, `!!timestamp x`: AttributeError), on 2024-13-45 (a date resolver
            # match) and on an int past Python's 4300-digit limit
            why = str(exc).split(";")[0] if isinstance(exc, ValueError) else f"not a valid {node.tag.rsplit(':', 1)[-1]}"
            raise LoadError(f"invalid YAML value {node.value!r:.60}: {why}",
                            location=_loc(self.file, node), hint="quote it to make it a string") from None

    def _mapping(self, node, path: tuple) -> dict:
        out: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                merged = self.build(value_node, path)
                for src in merged if isinstance(merged, list) else [merged]:
                    if isinstance(src, dict):
                        for k, v in src.items():
                            out.setdefault(k, v)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise LoadError("a mapping key must be a plain value", location=_loc(self.file, key_node))
            key = self._scalar(key_node)
            if not isinstance(key, (str, int, float, bool)):
                key = str(key)
            if key in out:
                first = self.locations.get(path + (key,))
                raise LoadError(f"duplicate key {key!r}", location=_loc(self.file, key_node),
                                hint=f"it was already given at line {first.line}" if first else "")
            self.locations[path + (key,)] = _loc(self.file, key_node)
            out[key] = self.build(value_node, path + (key,))
        return out


def _expanded_size(root) -> int:
    """How many values the builder would make once aliases are expanded, counted without expanding them."""
    sizes: dict = {}

    def size(node) -> int:
        if id(node) not in sizes:
            sizes[id(node)] = 1  # a recursive alias counts once here; the builder reports it
            if isinstance(node, yaml.MappingNode):
                children = [value for _, value in node.value]
            else:
                children = node.value if isinstance(node, yaml.SequenceNode) else ()
            sizes[id(node)] = min(1 + sum(size(c) for c in children), MAX_NODES + 1)
        return sizes[id(node)]

    return size(root)


def load_yaml(text: str | bytes, file: str) -> Document:
    """Parse one YAML document safely; raise LoadError with a location for any problem."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
        raise LoadError(f"YAML syntax error: {exc.problem or exc.context}", location=loc,
                        hint="check indentation and quoting near this line") from None
    except yaml.YAMLError as exc:
        raise LoadError(f"YAML error: {exc}", location=Location(file)) from None
    except UnicodeDecodeError:
        raise LoadError("file is not valid UTF-8", location=Location(file)) from None
    if node is None:
        return Document(file, None, {(): Location(file, 1, 1)})
    builder = _Builder(file)
    try:
        if _expanded_size(node) > MAX_NODES:  # count first: expanding a "billion laughs" to the cap costs seconds
            raise LoadError("document is too large or expands too many aliases", location=_loc(file, node),
                            hint=f"a BUILD file may hold at most {MAX_NODES} values after alias expansion")
        data = builder.build(node, ())
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
        raise LoadError(f"unsupported YAML value: {exc.problem}", location=loc,
                        hint="BUILD files hold plain data: strings, numbers, lists and mappings") from None
    except RecursionError:
        raise LoadError("document is nested too deeply", location=Location(file)) from None
    return Document(file, data, builder.locations)


class LazyDocument:
    """Stands in for a Document whose data came from the load cache; parses the file only if a
    location is asked for (i.e. only when reporting an error)."""

    def __init__(self, path, display: str):
        self.path, self.file = path, display
        self._doc = None

    def where(self, path: tuple) -> Location:
        if self._doc is None:
            try:
                self._doc = load_yaml_file(self.path, self.file)
            except LoadError:
                return Location(self.file)
        return self._doc.where(path)


def load_yaml_file(path, display: str) -> Document:
    """Read and parse a YAML file; `display` is the name shown in messages."""
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as exc:
        raise LoadError(f"cannot read file: {exc.strerror}", location=Location(display)) from None
    return load_yaml(text, display)
