"""Post-deploy check: import the service from this folder, call its health endpoint in-process."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.dont_write_bytecode = True  # leave no __pycache__ in the deployed folder
sys.path.insert(0, str(HERE))

try:
    expected = (HERE / "VERSION").read_text(encoding="utf-8").strip()
    import service

    status, body = service.handle("/health")
    if status != 200 or body.get("status") != "healthy" or body.get("version") != expected:
        raise RuntimeError(f"health answered {status} {body}")
except Exception as exc:  # any failure means the deployment is broken
    print(f"ProductService unhealthy: {exc}", file=sys.stderr)
    sys.exit(1)
print(f"ProductService {expected} healthy")
