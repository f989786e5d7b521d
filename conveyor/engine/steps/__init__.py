"""Step handlers, one module per step type behind one protocol (`base.StepHandler`)."""

from __future__ import annotations

from conveyor.domain.documents import StepType
from conveyor.engine.steps.base import StepContext, StepHandler, StepResult
from conveyor.engine.steps.deploy_release import DeployReleaseStep
from conveyor.engine.steps.manual_intervention import ManualInterventionStep
from conveyor.engine.steps.notification import NotificationStep
from conveyor.engine.steps.package import PackageStep
from conveyor.engine.steps.runners import LocalRunner, Runner
from conveyor.engine.steps.script import ScriptStep

HANDLERS: dict[StepType, StepHandler] = {
    StepType.SCRIPT: ScriptStep(),
    StepType.PACKAGE: PackageStep(),
    StepType.MANUAL_INTERVENTION: ManualInterventionStep(),
    StepType.NOTIFICATION: NotificationStep(),
    StepType.DEPLOY_RELEASE: DeployReleaseStep(),
}

__all__ = [
    "HANDLERS",
    "LocalRunner",
    "Runner",
    "StepContext",
    "StepHandler",
    "StepResult",
]
