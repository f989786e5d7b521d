"""Retention policies of lifecycles and phases to and from plain data (config as code).

```yaml
lifecycles:
  - name: Default
    release_retention: {keep: 10, unit: items}   # phases with none (nor an earlier one's)
    task_log_retention: {keep: 30, unit: days}
    package_retention: {keep: 5, unit: items}    # lifecycle only: the feed has no phases
    phases:
      - name: Development
        environments: [Development]
        release_retention: {keep: 2}             # unit: items unless said
      - name: Production                         # takes Development's: the last 2
        environments: [Production]
```
"""

from __future__ import annotations

from typing import Any

from conveyor.domain.documents import RetentionPolicy, RetentionUnit
from conveyor.domain.reading import Reader

# The largest number a policy may keep: beyond it, say nothing (keep forever).
MAX_KEEP = 1_000_000


def decode_policy(r: Reader, name: str) -> RetentionPolicy | None:
    """The policy under ``name`` (absent: None, keep forever), every problem recorded."""
    data = r.raw(name)
    if data is None:
        return None
    pr = Reader(data, (*r.path, name), r.problems, "a retention policy (keep, unit)")
    keep = pr.integer("keep", minimum=1)
    unit = pr.choice("unit", RetentionUnit, RetentionUnit.ITEMS)
    if pr.ok and not pr.has("keep"):
        pr.problem(
            "keep",
            "is required: how many items (or days) to keep; leave the policy "
            "out to keep everything",
        )
    elif keep is not None and keep > MAX_KEEP:
        pr.problem("keep", f"is at most {MAX_KEEP}; leave the policy out to keep everything")
        keep = None
    pr.finish()
    return RetentionPolicy(keep, unit) if keep is not None else None


def encode_policy(policy: RetentionPolicy | None) -> dict[str, Any] | None:
    if policy is None:
        return None
    return {"keep": policy.keep, "unit": str(policy.unit)}


def describe(policy: RetentionPolicy | None, noun: str = "items") -> str:
    """``"the last 2 releases"``, ``"the last release"``, ``"30 days"``, ``"forever"``."""
    if policy is None:
        return "forever"
    if policy.unit == RetentionUnit.DAYS:
        return f"{policy.keep} day{'s' if policy.keep != 1 else ''}"
    if policy.keep == 1:
        return f"the last {noun.removesuffix('s')}"
    return f"the last {policy.keep} {noun}"
