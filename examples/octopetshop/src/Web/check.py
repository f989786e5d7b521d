"""Post-deploy check: the site folder has an index.html with the shop's title and its styles."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TITLE = "<title>Octo Pet Shop</title>"

try:
    version = (HERE / "VERSION").read_text(encoding="utf-8").strip()
    index = (HERE / "index.html").read_text(encoding="utf-8")
    if TITLE not in index:
        raise RuntimeError(f"index.html does not contain {TITLE}")
    if 'href="styles.css"' in index and not (HERE / "styles.css").is_file():
        raise RuntimeError("index.html links styles.css, which is missing")
except Exception as exc:  # any failure means the deployment is broken
    print(f"Website broken: {exc}", file=sys.stderr)
    sys.exit(1)
print(f"Website {version} OK")
