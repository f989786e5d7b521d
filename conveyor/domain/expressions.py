"""A Jinja2 sandbox in which every ``#{...}`` evaluation is cheap, whatever its author wrote.

Jinja2's sandbox stops unsafe attribute access but not work: ``#{ 9**15000000 }`` holds the
interpreter for seconds in one C call, ``"x" * 10**9`` allocates a gigabyte, and a loop of loops
runs for hours. A thread cannot be interrupted in the middle of one such call, so the bounds must
hold before the work starts:

- only expressions, ``if`` and ``set`` may be used: no loops, macros or calls, so evaluation
  time is linear in the size of the template;
- ``**``, ``*``, ``+``, ``~`` and ``%`` are checked before they run (integers stay under
  ``MAX_INT_BITS``, text and lists under the output limit);
- only filters whose cost is linear in their input are offered, each checked before and after;
- the rendered output is counted as it is produced and refused beyond the limit.

Pure: no I/O; the caller chooses the limit (``settings.max_substitution_bytes``).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping, Sized
from typing import Any

from jinja2 import StrictUndefined, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import SandboxedEnvironment

from conveyor.domain.errors import ValidationFailed

# Default limit on what one substitution may produce (matches settings.max_substitution_bytes).
MAX_OUTPUT = 1024 * 1024
# Integers up to about 1,200 digits: far beyond any real condition, and instant to compute.
MAX_INT_BITS = 4096

# What a template may contain; anything else (for, macro, call, include, ...) is refused.
_ALLOWED_NODES: tuple[type[nodes.Node], ...] = (
    nodes.Template,
    nodes.Output,
    nodes.TemplateData,
    nodes.If,
    nodes.Assign,
    nodes.Name,
    nodes.Const,
    nodes.Getattr,
    nodes.Getitem,
    nodes.Slice,
    nodes.Filter,
    nodes.Test,
    nodes.Compare,
    nodes.Operand,
    nodes.And,
    nodes.Or,
    nodes.Not,
    nodes.Neg,
    nodes.Pos,
    nodes.CondExpr,
    nodes.Concat,
    nodes.Add,
    nodes.Sub,
    nodes.Mul,
    nodes.Div,
    nodes.FloorDiv,
    nodes.Mod,
    nodes.Pow,
    nodes.Tuple,
    nodes.List,
    nodes.Dict,
    nodes.Pair,
    nodes.Keyword,
)


class ExpressionLimit(ValidationFailed):
    """An expression would do more work than any deployment needs; it is refused unrun."""


def _size(value: Any) -> int:
    return len(value) if isinstance(value, str | bytes | list | tuple | dict) else 0


# ---------------------------------------------------------------- quoting filters


def shell_quote(value: Any) -> str:
    """One POSIX-shell word, whatever the text: ``'it'"'"'s'``; safe inside bash scripts."""
    return shlex.quote(str(value))


# PowerShell reads the typographic single quotes as quotes too, so each is doubled as well.
_PWSH_QUOTES = ("'", "\u2018", "\u2019", "\u201a", "\u201b")


def pwsh_quote(value: Any) -> str:
    """A PowerShell single-quoted string (no expansion inside), quotes doubled."""
    text = str(value)
    for quote in _PWSH_QUOTES:
        text = text.replace(quote, quote * 2)
    return f"'{text}'"


def python_quote(value: Any) -> str:
    """A Python string literal with the same text."""
    return repr(str(value))


# ---------------------------------------------------------------- the environment


class _Generator(CodeGenerator):
    """Routes ``a ~ b`` through the environment, so that concatenation is bounded too."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class BoundedEnvironment(SandboxedEnvironment):
    """Conveyor's ``#{ }`` sandbox; ``limit`` bounds every text and list an evaluation makes."""

    code_generator_class = _Generator
    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def __init__(self, limit: int = MAX_OUTPUT) -> None:
        super().__init__(
            variable_start_string="#{",
            variable_end_string="}",
            block_start_string="#{%",
            block_end_string="%}",
            comment_start_string="#{#",
            comment_end_string="#}",
            undefined=StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
        )
        self.limit = limit
        self.globals.clear()  # no range(), dict(), lipsum(), cycler(): nothing to loop or call
        self.filters = _filters(self.filters, limit)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            _check_power(left, right)
        elif operator == "*":
            _check_product(left, right, self.limit)
        elif operator == "+":
            if _size(left) + _size(right) > self.limit:
                raise _too_long(self.limit)
        elif operator == "%" and isinstance(left, str | bytes):
            raise ExpressionLimit(
                "text formatting with % is not supported in #{ } expressions; use ~ to join text"
            )
        return super().call_binop(context, operator, left, right)

    def bounded_concat(self, parts: tuple[Any, ...]) -> str:
        texts = [str(p) for p in parts]
        if sum(len(t) for t in texts) > self.limit:
            raise _too_long(self.limit)
        return "".join(texts)

    def check_tree(self, tree: nodes.Template) -> None:
        for node in tree.find_all(nodes.Node):
            if not isinstance(node, _ALLOWED_NODES):
                raise ExpressionLimit(
                    f"{_describe(node)} is not allowed in #{{ }}: use variables, filters, "
                    "comparisons, arithmetic and #{% if %}"
                )


def _describe(node: nodes.Node) -> str:
    words = {
        nodes.For: "a loop (#{% for %})",
        nodes.Call: "calling a function or method",
        nodes.Macro: "a macro",
        nodes.CallBlock: "a call block",
        nodes.Include: "include",
        nodes.Import: "import",
        nodes.FromImport: "import",
        nodes.Extends: "extends",
        nodes.Block: "a block",
    }
    return words.get(type(node), f"#{{% {type(node).__name__.lower()} %}}")


def _too_long(limit: int) -> ExpressionLimit:
    return ExpressionLimit(f"the result would be longer than the limit of {limit} bytes")


def _check_power(base: Any, exponent: Any) -> None:
    if (
        isinstance(base, int)
        and isinstance(exponent, int)
        and abs(base) > 1
        and exponent > 0
        and abs(base).bit_length() * exponent > MAX_INT_BITS
    ):
        raise ExpressionLimit(
            f"{base} ** {exponent} is too large a number (limit: {MAX_INT_BITS} bits)"
        )


def _check_product(left: Any, right: Any, limit: int) -> None:
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise ExpressionLimit(f"the product is too large a number (limit: {MAX_INT_BITS} bits)")
        return
    # Repetition: "ab" * 3, [1] * 3, in either order.
    count, seq = (left, right) if isinstance(left, int) else (right, left)
    if isinstance(count, int) and _size(seq) * max(count, 0) > limit:
        raise _too_long(limit)


# Filters whose cost is linear in their input; the rest (center, format, wordwrap, map, ...)
# are left out rather than audited one by one.
_SAFE_FILTERS = frozenset(
    {
        *("abs", "capitalize", "count", "d", "default", "e", "escape", "first", "float"),
        *("indent", "int", "join", "last", "length", "list", "lower", "max", "min"),
        *("replace", "reverse", "round", "sort", "string", "sum", "title", "tojson", "trim"),
        *("truncate", "unique", "upper", "urlencode", "wordcount"),
    }
)
# Quote free text for the language of a script: #{Conveyor.Release.Notes | shell}.
_QUOTING: dict[str, Callable[[Any], str]] = {
    "shell": shell_quote,
    "quote": shell_quote,
    "pwsh": pwsh_quote,
    "python": python_quote,
}


def _filters(
    builtin: Mapping[str, Callable[..., Any]], limit: int
) -> dict[str, Callable[..., Any]]:
    chosen = {name: _bounded(builtin[name], limit, name) for name in _SAFE_FILTERS}
    chosen.update((name, _bounded(quote, limit, name)) for name, quote in _QUOTING.items())
    return chosen


def _bounded(fn: Callable[..., Any], limit: int, name: str) -> Callable[..., Any]:
    # Jinja passes the context or environment first to filters marked for it; keep the mark.
    passes = hasattr(fn, "jinja_pass_arg")

    def run(*args: Any, **kwargs: Any) -> Any:
        _before(name, args[1:] if passes else args, kwargs, limit)
        result = fn(*args, **kwargs)
        if _size(result) > limit:
            raise _too_long(limit)
        return result

    if passes:
        run.jinja_pass_arg = fn.jinja_pass_arg  # type: ignore[attr-defined]
    return run


def _before(name: str, args: tuple[Any, ...], kwargs: dict[str, Any], limit: int) -> None:
    """Refuse what would be large before it is made: replace and join multiply, indent adds
    a width per line."""
    values = [*args, *kwargs.values()]
    if any(isinstance(v, int) and abs(v) > limit for v in values):
        raise _too_long(limit)
    if name == "replace" and len(values) >= 3:
        text, old, new = (str(v) for v in values[:3])
        if old and len(text) + text.count(old) * max(len(new) - len(old), 0) > limit:
            raise _too_long(limit)
    elif name == "join" and values and isinstance(values[0], Sized):
        items = list(values[0])  # type: ignore[call-overload]
        sep = str(values[1]) if len(values) > 1 else ""
        if sum(len(str(i)) for i in items) + len(sep) * len(items) > limit:
            raise _too_long(limit)
    elif name == "indent" and values:
        text = str(values[0])
        width = values[1] if len(values) > 1 else 4
        width = len(width) if isinstance(width, str) else int(width)
        if len(text) + (text.count("\n") + 1) * width > limit:
            raise _too_long(limit)


def render(source: str, context: Mapping[str, Any], *, limit: int = MAX_OUTPUT) -> str:
    """Render ``source`` (already in Jinja form) within ``limit``; Jinja's own errors pass up."""
    env = _environment(limit)
    try:
        tree = env.parse(source)
        env.check_tree(tree)
        template = env.from_string(tree)
        out: list[str] = []
        size = 0
        for chunk in template.generate(dict(context)):
            size += len(chunk.encode("utf-8", "surrogatepass"))
            if size > limit:
                raise ExpressionLimit(f"the result is longer than the limit of {limit} bytes")
            out.append(chunk)
    except (RecursionError, MemoryError) as exc:
        raise ExpressionLimit("the expression nests too deeply") from exc
    return "".join(out)


_environments: dict[int, BoundedEnvironment] = {}


def _environment(limit: int) -> BoundedEnvironment:
    # One environment per limit (in practice one): building one costs more than a render.
    env = _environments.get(limit)
    if env is None:
        env = _environments[limit] = BoundedEnvironment(limit)
    return env
