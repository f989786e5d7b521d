"""Editing one of a project's variables at a time (the web form), through ``change_config``
like every configuration change: VariableEdit in each environment the variable is scoped to
(before and after), validation, audit.

An edit names the variables' version it was read at (``documents.variables_version``) and the
variable by its position then; an edit made since refuses it. Showing whether a sensitive value
is set opens it (one project's, for its page): plain reads of the configuration never do.

A sensitive value is write-only: an empty field keeps the stored value, ``clear`` removes it.
A sensitive variable made non-sensitive never keeps its value (that would show it): it takes
the value typed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from conveyor.domain.codec import decode_variables
from conveyor.domain.documents import Project, Variable
from conveyor.domain.errors import Conflict, NotFound, Problem, ValidationFailed
from conveyor.domain.model import Model
from conveyor.services import documents
from conveyor.services.config import change_config, load
from conveyor.services.core import Caller, Services
from conveyor.store.documents import reveal


@dataclass(frozen=True)
class VariableForm:
    """What the form sends for one variable."""

    name: str
    value: str
    sensitive: bool = False
    environments: tuple[str, ...] = ()
    # Sensitive: remove the stored value (otherwise an empty value keeps it).
    clear: bool = False


def _checked(form: VariableForm) -> Variable:
    problems: list[Problem] = []
    item = {
        "name": form.name,
        "value": form.value,
        "sensitive": form.sensitive,
        "environments": list(form.environments),
    }
    decoded = decode_variables([item], ("variable",), problems)
    if problems:
        raise ValidationFailed([Problem(p.path[2:], p.message) for p in problems])
    return decoded[0]


async def save_variable(
    services: Services,
    caller: Caller,
    ref: str,
    *,
    read_at: str,
    index: int | None,
    form: VariableForm,
) -> None:
    """Add a variable (``index`` None) or change the one at ``index``."""
    await documents.authorise_edit(services, caller, "projects", ref, "variables")
    wanted = _checked(form)
    name = documents.resolve(await load(services), "projects", ref).name
    as_read = await documents.variables_as_read(services, name, read_at)

    def mutate(model: Model) -> Model:
        project = _current(model, name, as_read)
        variables = list(project.variables)
        if index is None:
            variables.append(wanted)
        else:
            before = _at(project, index)
            keep = wanted.sensitive and before.sensitive and not form.value and not form.clear
            variables[index] = replace(wanted, value=before.value) if keep else wanted
        return model.with_doc("projects", replace(project, variables=tuple(variables)))

    await change_config(services, caller, mutate, edits=(("projects", name, "variables"),))


async def delete_variable(
    services: Services, caller: Caller, ref: str, *, read_at: str, index: int
) -> None:
    await documents.authorise_edit(services, caller, "projects", ref, "variables")
    name = documents.resolve(await load(services), "projects", ref).name
    as_read = await documents.variables_as_read(services, name, read_at)

    def mutate(model: Model) -> Model:
        project = _current(model, name, as_read)
        _at(project, index)
        variables = project.variables[:index] + project.variables[index + 1 :]
        return model.with_doc("projects", replace(project, variables=variables))

    await change_config(services, caller, mutate, edits=(("projects", name, "variables"),))


def _current(model: Model, name: str, as_read: tuple[Variable, ...]) -> Project:
    project = model.get("projects", name)
    if not isinstance(project, Project):
        raise NotFound(f'project "{name}" does not exist')
    documents.unchanged_since(project, as_read)
    return project


def _at(project: Project, index: int) -> Variable:
    if not 0 <= index < len(project.variables):
        raise Conflict(f'the variables of "{project.name}" have no variable {index + 1}')
    return project.variables[index]


async def sensitive_values_set(services: Services, caller: Caller, ref: str) -> list[bool]:
    """For each variable of a project, in order: whether it has a value (checks VariableView).
    A page says "set" or "not set" of a sensitive one, never more."""
    await documents.get_variables(services, caller, ref)
    project = documents.resolve(await load(services), "projects", ref)
    return [bool(reveal(services.box, v.value)) for v in project.variables]
