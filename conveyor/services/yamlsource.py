"""YAML in and out for config as code: parsing that remembers where every node is, and dumping
that a person can read.

Parsing uses PyYAML's safe composer (no arbitrary objects) and builds plain data from the node
tree itself, so every string can be transformed where it stands (``${env:NAME}``) and every
problem, whatever its path, can be pointed at a line of the file.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from conveyor.domain.documents import key
from conveyor.domain.errors import Problem, ValidationFailed

Path = tuple[str | int, ...]
# Called for every string value (never a key) with its path and 1-based line.
Transform = Callable[[str, Path, int], str]

TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")
# Aliases can make a short file expand enormously ("billion laughs"); refuse beyond these.
MAX_NODES = 200_000
# Default nesting limit (settings.max_config_depth): deeper than any real configuration.
MAX_DEPTH = 64
# Lists of short names are dumped on one line up to this many characters.
FLOW_WIDTH = 60


@dataclass
class Source:
    """The data of a YAML file and the nodes it came from."""

    data: Any
    root: Node | None
    problems: list[Problem] = field(default_factory=list)

    def line_at(self, path: Path, *, min_depth: int = 0) -> int | None:
        """The line of the deepest node ``path`` reaches, or None when it reaches fewer than
        ``min_depth`` of its parts (for example a document the file does not hold)."""
        lines = _walk(self.root, path)
        if len(lines) < min(min_depth, len(path)) or not lines:
            return None
        return lines[-1]


def line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def syntax_error(exc: yaml.YAMLError) -> ValidationFailed:
    """A YAML error as a located problem, in words a person can act on."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    message = f"the file is not valid YAML: {problem}"
    if context and context_mark is not None:
        message += f" ({context} at line {context_mark.line + 1})"
    where = mark.line + 1 if mark is not None else None
    return ValidationFailed([Problem((), message, line=where)])


class _DepthLimitedLoader(yaml.SafeLoader):
    """PyYAML composes nodes recursively, so a 5,000-deep file is a RecursionError; this
    loader refuses to go deeper than ``max_depth`` before it recurses."""

    max_depth = MAX_DEPTH
    depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self.depth += 1
        try:
            if self.depth > self.max_depth:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise ValidationFailed(
                    [
                        Problem(
                            (),
                            f"the file nests deeper than {self.max_depth} levels: flatten it "
                            "(an administrator can raise CONVEYOR_MAX_CONFIG_DEPTH)",
                            line=mark.line + 1,
                        )
                    ]
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def compose(text: str, *, max_depth: int = MAX_DEPTH) -> Node | None:
    """The node tree of a YAML text; raises ValidationFailed on a syntax error or a file that
    nests deeper than ``max_depth`` (checked while composing, before any recursion runs deep)."""
    loader = _DepthLimitedLoader(text)
    loader.max_depth = max_depth
    try:
        return loader.get_single_node()
    except yaml.YAMLError as exc:
        raise syntax_error(exc) from exc
    finally:
        loader.dispose()


def parse(text: str, transform: Transform | None = None, *, max_depth: int = MAX_DEPTH) -> Source:
    """Plain data (dicts, lists, str, int, float, bool, None) with the nodes kept for lines."""
    root = compose(text, max_depth=max_depth)
    source = Source(None, root)
    if root is not None:
        builder = _Builder(source.problems, transform, text.splitlines())
        builder.max_depth = max_depth
        source.data = builder.build(root, (), 0)
    return source


# Conveyor substitutes #{Name}; in YAML, " #" starts a comment, so an unquoted
# "Deploy to #{Environment}" silently loses its end. Refuse it and say how to fix it.
SWALLOWED = re.compile(r"\s+#\{")


class _Builder:
    def __init__(
        self, problems: list[Problem], transform: Transform | None, lines: list[str]
    ) -> None:
        self.problems = problems
        self.transform = transform
        self.lines = lines
        self.constructor = yaml.constructor.SafeConstructor()
        self.count = 0
        self.max_depth = MAX_DEPTH

    def build(self, node: Node, path: Path, depth: int) -> Any:
        self.count += 1
        if self.count > MAX_NODES or depth > self.max_depth:
            message = "the file nests or repeats (through aliases) too much"
            raise ValidationFailed([Problem(path[:1], message, line(node))])
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        if not isinstance(node, ScalarNode) and node.tag not in PLAIN_TAGS:
            # Read as plain data, never as an object; the tag itself is the problem.
            self.problems.append(Problem(path, f"the tag {node.tag} is not allowed", line(node)))
        if isinstance(node, SequenceNode):
            return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        if isinstance(node, MappingNode):
            return self._mapping(node, path, depth)
        self.problems.append(
            Problem(path, "is not something this file format understands", line(node))
        )
        return None

    def _scalar(self, node: ScalarNode, path: Path) -> Any:
        if node.tag == TIMESTAMP_TAG:
            # No field takes a date; keep what was written ("2024-05-01" stays text).
            value: Any = node.value
        else:
            try:
                value = self.constructor.construct_object(node, deep=True)
            except yaml.YAMLError as exc:
                self.problems.append(Problem(path, _cannot_read(exc), line(node)))
                return None
        end = node.end_mark
        rest = self.lines[end.line][end.column :] if end.line < len(self.lines) else ""
        if node.style is None and SWALLOWED.match(rest):
            self.problems.append(
                Problem(
                    path,
                    'the rest of the line after " #{" is read as a YAML comment and lost: '
                    "quote the whole value",
                    end.line + 1,
                )
            )
        if isinstance(value, str) and self.transform is not None:
            return self.transform(value, path, line(node))
        if isinstance(value, bytes):
            self.problems.append(Problem(path, "binary values are not supported", line(node)))
            return None
        return value

    def _mapping(self, node: MappingNode, path: Path, depth: int) -> dict[str, Any]:
        try:
            self.constructor.flatten_mapping(node)  # resolve "<<" merge keys
        except yaml.YAMLError as exc:
            self.problems.append(Problem(path, _cannot_read(exc), line(node)))
            return {}
        out: dict[str, Any] = {}
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.problems.append(Problem(path, "keys must be plain text", line(key_node)))
                continue
            name = str(key_node.value)
            if name in first:
                self.problems.append(
                    Problem(
                        (*path, name),
                        f"is given twice in the same mapping (first at line {first[name]})",
                        line(key_node),
                    )
                )
                continue
            first[name] = line(key_node)
            out[name] = self.build(value_node, (*path, name), depth + 1)
        return out


def _cannot_read(exc: yaml.YAMLError) -> str:
    return f"cannot be read: {getattr(exc, 'problem', None) or exc}"


def _walk(node: Node | None, path: Path) -> list[int]:
    """The line reached by each successive part of ``path``, stopping where it no longer leads."""
    lines: list[int] = []
    for part in path:
        if node is None:
            break
        found: tuple[int, Node] | None = None
        if isinstance(node, MappingNode) and isinstance(part, str):
            found = next(
                (
                    (line(k), v)
                    for k, v in node.value
                    if isinstance(k, ScalarNode) and k.value == part
                ),
                None,
            )
        elif isinstance(node, SequenceNode) and isinstance(part, int):
            if 0 <= part < len(node.value):
                found = (line(node.value[part]), node.value[part])
        elif isinstance(node, SequenceNode):
            found = next(((line(item), item) for item in node.value if _named(item, part)), None)
        if found is None:
            break
        lines.append(found[0])
        node = found[1]
    return lines


def _named(node: Node, name: str | int) -> bool:
    if not isinstance(node, MappingNode):
        return False
    for k, v in node.value:
        if (
            isinstance(k, ScalarNode)
            and k.value in ("name", "username")
            and isinstance(v, ScalarNode)
            and key(str(v.value)) == key(str(name))
        ):
            return True
    return False


def string_nodes(root: Node | None) -> list[ScalarNode]:
    """Every scalar in value position (not mapping keys), in document order, each node once."""
    out: list[ScalarNode] = []
    seen: set[int] = set()

    def visit(node: Node) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, ScalarNode):
            out.append(node)
        elif isinstance(node, SequenceNode):
            for item in node.value:
                visit(item)
        elif isinstance(node, MappingNode):
            for _, value in node.value:
                visit(value)

    if root is not None:
        visit(root)
    return out


# ---------------------------------------------------------------- dumping


class ReadableDumper(yaml.SafeDumper):
    """Safe YAML that people read in reviews: indented lists, scripts as ``|`` blocks."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


def _represent_list(dumper: yaml.SafeDumper, value: list[Any]) -> yaml.SequenceNode:
    # Lists of names read best on one line: environments: [Test, Production]
    flow = all(isinstance(v, str | int) and "\n" not in str(v) for v in value) and (
        sum(len(str(v)) + 2 for v in value) <= FLOW_WIDTH
    )
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flow)


ReadableDumper.add_representer(str, _represent_str)
ReadableDumper.add_representer(list, _represent_list)


def dump(data: Any) -> str:
    return yaml.dump(
        data,
        Dumper=ReadableDumper,
        sort_keys=False,
        allow_unicode=True,
        width=100,
        default_flow_style=False,
    )
