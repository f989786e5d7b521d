"""The catalogue of audit event categories.

Every change of state and every refused attempt at a protected action appends one event; the
category says what caused it, the documents say what it concerns.
"""

from __future__ import annotations

from enum import StrEnum


class Category(StrEnum):
    DOCUMENT_CREATED = "DocumentCreated"
    DOCUMENT_MODIFIED = "DocumentModified"
    DOCUMENT_DELETED = "DocumentDeleted"
    CONFIG_APPLIED = "ConfigApplied"
    USER_CREATED = "UserCreated"
    PASSWORD_CHANGED = "PasswordChanged"
    API_KEY_CREATED = "ApiKeyCreated"
    API_KEY_REVOKED = "ApiKeyRevoked"
    LOGIN_SUCCEEDED = "LoginSucceeded"
    LOGIN_FAILED = "LoginFailed"
    LOGGED_OUT = "LoggedOut"
    ACCESS_DENIED = "AccessDenied"
    PACKAGE_PUSHED = "PackagePushed"
    PACKAGE_DELETED = "PackageDeleted"
    RELEASE_CREATED = "ReleaseCreated"
    RELEASE_DELETED = "ReleaseDeleted"
    DEPLOYMENT_QUEUED = "DeploymentQueued"
    DEPLOYMENT_STARTED = "DeploymentStarted"
    DEPLOYMENT_SUCCEEDED = "DeploymentSucceeded"
    DEPLOYMENT_FAILED = "DeploymentFailed"
    DEPLOYMENT_CANCELED = "DeploymentCanceled"
    DEPLOYMENT_RESUMED = "DeploymentResumed"
    STEP_SKIPPED = "StepSkipped"
    INTERRUPTION_RAISED = "InterruptionRaised"
    INTERRUPTION_TAKEN = "InterruptionTaken"
    INTERRUPTION_SUBMITTED = "InterruptionSubmitted"
    TASK_CANCELED = "TaskCanceled"


DESCRIPTIONS: dict[Category, str] = {
    Category.DOCUMENT_CREATED: "A configuration document was created",
    Category.DOCUMENT_MODIFIED: "A configuration document was changed (before and after)",
    Category.DOCUMENT_DELETED: "A configuration document was deleted",
    Category.CONFIG_APPLIED: "A config-as-code file was applied",
    Category.USER_CREATED: "A user or service account was created",
    Category.PASSWORD_CHANGED: "A password was set or changed",
    Category.API_KEY_CREATED: "An API key was created",
    Category.API_KEY_REVOKED: "An API key was revoked",
    Category.LOGIN_SUCCEEDED: "Someone signed in",
    Category.LOGIN_FAILED: "A sign-in failed",
    Category.LOGGED_OUT: "Someone signed out",
    Category.ACCESS_DENIED: "A protected action was refused for lack of permission",
    Category.PACKAGE_PUSHED: "A package was pushed to the built-in feed",
    Category.PACKAGE_DELETED: "A package was deleted from the built-in feed",
    Category.RELEASE_CREATED: "A release was created",
    Category.RELEASE_DELETED: "A release was deleted",
    Category.DEPLOYMENT_QUEUED: "A deployment was queued",
    Category.DEPLOYMENT_STARTED: "A deployment started running",
    Category.DEPLOYMENT_SUCCEEDED: "A deployment succeeded",
    Category.DEPLOYMENT_FAILED: "A deployment failed",
    Category.DEPLOYMENT_CANCELED: "A deployment was canceled",
    Category.DEPLOYMENT_RESUMED: "A deployment resumed after an interruption was answered",
    Category.STEP_SKIPPED: "A step was skipped (the details say why)",
    Category.INTERRUPTION_RAISED: "A deployment is waiting for a person",
    Category.INTERRUPTION_TAKEN: "Someone took responsibility for an interruption",
    Category.INTERRUPTION_SUBMITTED: "Someone answered an interruption (with notes)",
    Category.TASK_CANCELED: "A task was canceled",
}
