"""The one YAML reader: sweep files, `--config` files and `--set KEY=VALUE` values, read with the safe
loader, bounded (size, nesting, aliases, integer length) and with YAML 1.2's numbers (`1e-3` is a
float); every problem is one ConfigError naming the file and line.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from bnsweep.errors import ConfigError


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`key=value` strings from the command line; values are read as YAML scalars (8 -> int, true -> bool)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError("--set", item, "key=value pairs, e.g. trainable=bn", "")
        out[key.strip()] = _yaml_scalar(raw)
    return out


# Bounds on any YAML bnsweep reads (sweep files, --config, --set): far above any real sweep, far
# below what exhausts memory or Python's stack.
MAX_FILE_BYTES = 1 << 20
MAX_DEPTH = 50  # nesting levels, aliases followed
MAX_VALUES = 10_000  # nodes once aliases are expanded (a 1 kB file of nested aliases expands to billions)
MAX_INT_DIGITS = 100


class _TooBig(yaml.MarkedYAMLError):
    """A document past one of the bounds above."""


class _Loader(yaml.SafeLoader):
    """The safe loader, with exponent floats without a dot (1e-3, 5e-4, 1.0e5) read as numbers, and
    bounded: nesting depth, expanded size and integer length are checked while composing, before
    anything is constructed, so a hostile document costs no more than its own bytes.

    PyYAML follows YAML 1.1, where `lr: 1e-3` is the string '1e-3' (an exponent needs a dot and a
    sign); YAML 1.2 and every researcher read it as 0.001.
    """

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0  # of the node being composed, as written
        self._values = 0  # composed so far, aliases counted as what they expand to
        self._expanded: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth) with aliases expanded

    def fetch_flow_collection_start(self, token_class):
        # the scanner looks ahead over a whole flow collection: stop at the depth, not after it
        if self.flow_level >= MAX_DEPTH:
            raise _TooBig(None, None, f"nested deeper than {MAX_DEPTH} levels", self.get_mark())
        super().fetch_flow_collection_start(token_class)

    def add_indent(self, column):
        if len(self.indents) >= MAX_DEPTH:
            raise _TooBig(None, None, f"nested deeper than {MAX_DEPTH} levels", self.get_mark())
        return super().add_indent(column)

    def compose_node(self, parent, index):
        if self._depth >= MAX_DEPTH:
            raise _TooBig(None, None, f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if id(node) in self._expanded:  # an alias: a node composed (and counted) before, once more
            self._values += self._expanded[id(node)][0]
        else:
            self._measure(node)
            self._values += 1  # its children were counted as they were composed
        if self._values > MAX_VALUES:
            raise _TooBig(None, None, f"more than {MAX_VALUES} values once aliases are expanded", node.start_mark)
        return node

    def _measure(self, node: yaml.Node) -> None:
        """Record the node's size and depth with aliases expanded, from its children's."""
        children = node.value if isinstance(node, yaml.SequenceNode) else \
            [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else []
        measured = [self._expanded[id(child)] for child in children]
        depth = 1 + max((m[1] for m in measured), default=0)
        if depth > MAX_DEPTH:
            raise _TooBig(None, None, f"nesting deeper than {MAX_DEPTH} levels once aliases are expanded",
                          node.start_mark)
        self._expanded[id(node)] = (1 + sum(m[0] for m in measured), depth)

    def construct_mapping(self, node, deep=False):
        """Refuse a key written twice in one mapping (YAML's loaders silently keep the last one, so
        a second `trial:` would drop the first); keys merged in with `<<` may still be overridden."""
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key, _ in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    if (key.tag, key.value) in seen:
                        raise yaml.constructor.ConstructorError(None, None, f"found the key {key.value!r} twice",
                                                                key.start_mark)
                    seen.add((key.tag, key.value))
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node):
        digits = len(node.value.lstrip("+-").replace("_", ""))  # hex and binary too
        if digits > MAX_INT_DIGITS:
            raise _TooBig(None, None, f"an integer of {digits} digits (at most {MAX_INT_DIGITS})",
                          node.start_mark)
        return super().construct_yaml_int(node)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+|[-+]?\.[0-9_]+[eE][-+]?[0-9]+)$"),
    list("-+0123456789."))


def _yaml_scalar(raw: str) -> Any:
    try:
        return yaml.load(raw, Loader=_Loader) if raw.strip() else ""
    except yaml.YAMLError:
        return raw


def load_yaml(path: str) -> Any:
    """Read a YAML file with the safe loader; errors become one-line ConfigErrors naming the file."""
    return parse_yaml(read_text(path), path)


def read_text(path: str) -> str:
    """A UTF-8 text file's contents; anything else (missing, a directory, FIFO or device, unreadable,
    over MAX_FILE_BYTES, other bytes) is a ConfigError naming the file."""
    from bnsweep.files import UnreadableFile, read_bytes

    try:
        data = read_bytes(path, MAX_FILE_BYTES)
    except UnreadableFile as err:
        allowed = ("an existing YAML file" if err.problem == "does not exist" else
                   f"a YAML file of at most {MAX_FILE_BYTES >> 20} MiB" if err.problem.startswith("larger") else
                   f"a readable YAML file ({err.problem})" if err.problem.startswith("cannot") else
                   f"a YAML file, not {err.problem}")
        raise ConfigError("file", path, allowed) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError("file", path, f"UTF-8 text (byte {err.start} is not)") from None


def parse_yaml(text: str, where: str) -> Any:
    """Parse YAML text with the safe loader; a parse error becomes a one-line ConfigError."""
    try:
        return yaml.load(text, Loader=_Loader)
    except _TooBig as err:
        raise ConfigError("file", where, f"YAML within bnsweep's limits (line {err.problem_mark.line + 1}: "
                          f"{err.problem})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        offset = getattr(err, "position", None)  # a reader error (a control character) has no mark
        line = mark.line + 1 if mark else text.count("\n", 0, offset) + 1 if offset is not None else None
        problem = " ".join(str(getattr(err, "problem", None) or str(err).splitlines()[0]).split())
        at = f" (line {line})" if line else ""
        raise ConfigError("file", where, f"valid YAML; parse error{at}: {problem}") from None
