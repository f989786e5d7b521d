"""The manual intervention step: a question to people; the task waits for the answer."""

from __future__ import annotations

from conveyor.domain.codec_governance import encode_fields
from conveyor.domain.documents import ManualInterventionAction
from conveyor.domain.interruptions import Kind
from conveyor.domain.variables import substitute
from conveyor.engine.steps.base import StepContext, StepResult


class ManualInterventionStep:
    async def run(self, ctx: StepContext) -> StepResult:
        action, step = ctx.step.action, ctx.step
        assert isinstance(action, ManualInterventionAction)
        instructions = substitute(action.instructions, ctx.values, what="the instructions")
        teams = ", ".join(action.responsible_teams) or "anyone who may deploy here"
        ctx.say(f'"{step.name}" waits for {teams}: {instructions}')
        return await ctx.ask(
            kind=Kind.MANUAL_INTERVENTION.value,
            title=f'"{step.name}" for {ctx.run.label}',
            instructions=instructions,
            responsible_teams=action.responsible_teams,
            settings={
                "prevent_self_approval": action.prevent_self_approval,
                "required_approvals": action.required_approvals,
                "approval_teams": list(action.approval_teams),
                "block_deployments": action.block_deployments,
                "required_step": step.is_required,
                # The questions travel with the interruption: answering never reads the
                # release snapshot again.
                "fields": encode_fields(action.fields),
            },
            blocks=action.block_deployments,
        )
