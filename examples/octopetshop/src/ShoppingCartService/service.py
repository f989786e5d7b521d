"""Octo Pet Shop shopping cart service: in-memory carts over HTTP (stdlib only).

handle(path, method="GET", payload=None) -> (status, body) answers requests in-process;
body is JSON-serialisable. Routes: GET /health, POST /carts, GET /carts/<id>,
POST /carts/<id>/items {"product_id": 1, "quantity": 2}.
Run it with `python3 service.py [port]` (default: $PORT or 8081).
"""

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

NAME = "ShoppingCartService"
HERE = Path(__file__).resolve().parent
CARTS: dict[int, dict[int, int]] = {}  # cart id -> {product id: quantity}
LOCK = threading.Lock()


def version() -> str:
    return (HERE / "VERSION").read_text(encoding="utf-8").strip()


def cart_body(cart_id: int) -> dict[str, Any]:
    items = [{"product_id": p, "quantity": q} for p, q in sorted(CARTS[cart_id].items())]
    return {"id": cart_id, "items": items}


def handle(path: str, method: str = "GET", payload: Any = None) -> tuple[int, Any]:
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    with LOCK:
        if method == "GET" and parts == ["health"]:
            return 200, {
                "service": NAME,
                "version": version(),
                "status": "healthy",
                "carts": len(CARTS),
            }
        if method == "POST" and parts == ["carts"]:
            cart_id = len(CARTS) + 1
            CARTS[cart_id] = {}
            return 201, cart_body(cart_id)
        if len(parts) >= 2 and parts[0] == "carts":
            cart_id = int(parts[1]) if parts[1].isdigit() else 0
            if cart_id not in CARTS:
                return 404, {"error": f"no cart {parts[1]}"}
            if method == "GET" and len(parts) == 2:
                return 200, cart_body(cart_id)
            if method == "POST" and parts[2:] == ["items"]:
                try:
                    product_id = int(payload["product_id"])
                    quantity = int(payload.get("quantity", 1))
                except (TypeError, KeyError, ValueError, AttributeError):
                    return 400, {"error": "expected {'product_id': int, 'quantity': int}"}
                if quantity < 1:
                    return 400, {"error": "quantity must be positive"}
                CARTS[cart_id][product_id] = CARTS[cart_id].get(product_id, 0) + quantity
                return 200, cart_body(cart_id)
        return 404, {"error": f"not found: {method} {path}"}


class Handler(BaseHTTPRequestHandler):
    def _reply(self, method: str) -> None:
        payload = None
        if method == "POST":
            length = int(self.headers.get("Content-Length") or 0)
            try:
                payload = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                payload = None
        status, body = handle(self.path, method, payload)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._reply("GET")

    def do_POST(self) -> None:
        self._reply("POST")


if __name__ == "__main__":
    port = int(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PORT", "8081"))
    print(f"{NAME} {version()} listening on http://127.0.0.1:{port}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
