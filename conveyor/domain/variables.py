"""Variables: which value applies in an environment, and ``#{Name}`` substitution.

Substitution runs in a bounded Jinja2 sandbox (``expressions``) with ``#{`` ``}`` as the
expression delimiters, so a script body can say ``#{Conveyor.Environment.Name}``,
``#{Greeting | upper}`` or ``#{Conveyor.Release.Notes | shell}`` (quoted for the shell); a name
that is not defined is an error that names it, never an empty string.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from jinja2 import TemplateSyntaxError, UndefinedError

from conveyor.domain import expressions
from conveyor.domain.documents import Variable, key
from conveyor.domain.errors import ValidationFailed
from conveyor.domain.expressions import MAX_OUTPUT, ExpressionLimit
from conveyor.domain.masking import Masker as Masker  # moved; re-exported

# A variable reference: #{Name} where Name may hold dots, brackets, spaces and dashes
# (Conveyor.Action[Deploy Database].Output.X), optionally followed by | filters.
_REFERENCE = re.compile(r"#\{\s*([A-Za-z_][A-Za-z0-9_.\-\[\] ]*?)\s*(\|[^}]*)?\}")


@dataclass(frozen=True)
class Resolved:
    """The variables of one deployment: values by name, and which of them are secret."""

    values: Mapping[str, str]
    sensitive: frozenset[str]

    def secrets(self) -> list[str]:
        return [self.values[n] for n in self.sensitive if n in self.values]


def resolve(variables: Iterable[Variable], environment: str) -> Resolved:
    """For each name, the value scoped to ``environment`` wins over an unscoped one."""
    chosen: dict[str, tuple[int, Variable]] = {}
    for var in variables:
        if var.environments and key(environment) not in {key(e) for e in var.environments}:
            continue
        rank = 1 if var.environments else 0
        current = chosen.get(var.name)
        if current is None or rank > current[0]:
            chosen[var.name] = (rank, var)
    values = {name: var.value for name, (_, var) in chosen.items()}
    sensitive = frozenset(name for name, (_, var) in chosen.items() if var.sensitive)
    return Resolved(values, sensitive)


def merge(*layers: Resolved) -> Resolved:
    """Later layers override earlier ones (built-ins, then project, then parent-passed)."""
    values: dict[str, str] = {}
    sensitive: set[str] = set()
    for layer in layers:
        for name, value in layer.values.items():
            values[name] = value
            sensitive.discard(name)
        sensitive |= layer.sensitive
    return Resolved(values, frozenset(sensitive))


def references(text: str) -> list[str]:
    return list(dict.fromkeys(m.group(1) for m in _REFERENCE.finditer(text)))


def substitute(
    text: str, values: Mapping[str, str], *, what: str = "text", limit: int = MAX_OUTPUT
) -> str:
    """Replace every ``#{Name}``; an unknown name raises ValidationFailed naming it. Evaluation
    is bounded (``expressions``): what would cost more, or produce more than ``limit`` bytes,
    raises ExpressionLimit naming ``what``."""
    if "#{" not in text:
        return text
    names = references(text)
    missing = [n for n in names if n not in values]
    if missing:
        listed = ", ".join(f"#{{{n}}}" for n in missing)
        raise ValidationFailed(f"{what} uses variables that are not defined: {listed}")
    slots = {n: f"v{i}" for i, n in enumerate(names)}

    def to_jinja(match: re.Match[str]) -> str:
        return "#{ " + slots[match.group(1)] + (match.group(2) or "") + " }"

    source = _REFERENCE.sub(to_jinja, text)
    try:
        return expressions.render(source, {slots[n]: values[n] for n in names}, limit=limit)
    except ExpressionLimit as exc:
        raise ExpressionLimit(f"{what} cannot be substituted: {exc.message}") from exc
    except (TemplateSyntaxError, UndefinedError) as exc:
        raise ValidationFailed(f"{what} cannot be substituted: {exc.message}") from exc
    except Exception as exc:  # the sandbox refuses unsafe operations with its own errors
        raise ValidationFailed(f"{what} cannot be substituted: {exc}") from exc


def truthy(text: str) -> bool:
    """How a rendered condition expression reads: empty, false, no, off and 0 are false."""
    return text.strip().lower() not in ("", "false", "no", "off", "0", "none")


def environment_name(name: str) -> str:
    """``Conveyor.Release.Number`` -> ``CONVEYOR_RELEASE_NUMBER`` for a script's environment."""
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").upper()
