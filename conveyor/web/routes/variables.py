"""A project's variables: read by whoever may view them, edited by those with VariableEdit in
the environments a variable is scoped to. Sensitive values are write-only: a page never holds
one, only whether it is set.

Every form sends the variables' version it was read at and posts to the page's own address, so
that a refused edit is shown there with the reason and what was typed (never a secret)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import FormData

from conveyor.domain.errors import Conflict, NotFound, ValidationFailed
from conveyor.services import documents, variable_edits
from conveyor.services.core import Caller, Services
from conveyor.web.pages import (
    PageCaller,
    PageRoute,
    ServicesDep,
    form_list,
    form_text,
    redirect,
    render,
    sentence,
)
from conveyor.web.routes.projects import project_header

router = APIRouter(route_class=PageRoute, include_in_schema=False)
DONE = {
    "added": "The variable was added.",
    "saved": "The variable was saved.",
    "removed": "The variable was removed.",
}
NEW = "new"


async def _page(
    request: Request,
    services: Services,
    caller: Caller,
    slug: str,
    *,
    status: int = 200,
    error: str = "",
    editing: str = "",
    typed: dict[str, Any] | None = None,
) -> Response:
    header = await project_header(services, caller, slug)
    data = await documents.get_variables(services, caller, slug)  # checks VariableView
    environments = [
        d.name for d in await documents.list_documents(services, caller, "environments")
    ]
    for v in data["variables"]:
        environments += [e for e in v.get("environments", ()) if e not in environments]
    filled = await variable_edits.sensitive_values_set(services, caller, slug)
    shown = [
        {**v, "is_set": i < len(filled) and filled[i]} for i, v in enumerate(data["variables"])
    ]
    return render(
        request,
        "variables.html",
        status=status,
        title=f"{header['name']}: variables",
        project=header,
        tab="variables",
        variables=shown,
        version=data["version"],
        environments=environments,
        error=error,
        editing=editing,
        typed=typed or {},
        done_message=DONE.get(request.query_params.get("done", ""), ""),
    )


@router.get("/projects/{slug}/variables")
async def variables(
    slug: str, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    return await _page(request, services, caller, slug)


def _typed(form: FormData) -> variable_edits.VariableForm:
    return variable_edits.VariableForm(
        name=form_text(form, "name").strip(),
        value=form_text(form, "value").replace("\r\n", "\n"),
        sensitive="sensitive" in form,
        environments=tuple(form_list(form, "environments")),
        clear="clear" in form,
    )


@router.post("/projects/{slug}/variables")
async def change_variable(
    slug: str, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    """``variable`` names the one changed (its position, or ``new``) and ``op`` the change."""
    # Authorise before reading the form: who may not edit is told so, not what is missing.
    await documents.authorise_edit(services, caller, "projects", slug, "variables")
    form = await request.form()
    which, op = form_text(form, "variable", NEW), form_text(form, "op", "save")
    index = int(which) if which.isdigit() and len(which) < 6 else None
    read_at = form_text(form, "version")
    typed = _typed(form)
    try:
        if op == "remove":
            if index is None:
                raise NotFound("choose the variable to remove")
            await variable_edits.delete_variable(
                services, caller, slug, read_at=read_at, index=index
            )
            done = "removed"
        else:
            await variable_edits.save_variable(
                services, caller, slug, read_at=read_at, index=index, form=typed
            )
            done = "added" if index is None else "saved"
    except (Conflict, ValidationFailed, NotFound) as exc:
        status = 422 if isinstance(exc, ValidationFailed) else 409
        shown = {
            "name": typed.name,
            "sensitive": typed.sensitive,
            "environments": list(typed.environments),
            # A sensitive value typed is never sent back to the browser.
            "value": "" if typed.sensitive else typed.value,
        }
        return await _page(
            request,
            services,
            caller,
            slug,
            status=status,
            error=sentence(exc.message),
            editing=which if isinstance(exc, ValidationFailed) else "",
            typed=shown if isinstance(exc, ValidationFailed) else None,
        )
    return redirect(f"/projects/{slug}/variables", done=done)
