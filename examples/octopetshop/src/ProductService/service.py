"""Octo Pet Shop product service: a tiny read-only catalogue over HTTP (stdlib only).

handle(path) -> (status, body) answers GET requests in-process; body is JSON-serialisable.
Run it with `python3 service.py [port]` (default: $PORT or 8082).
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

NAME = "ProductService"
HERE = Path(__file__).resolve().parent
PRODUCTS = [
    {"id": 1, "sku": "DOG-BED-01", "name": "Cosy Dog Bed", "price_cents": 4999},
    {"id": 2, "sku": "CAT-TREE-01", "name": "Cat Climbing Tree", "price_cents": 7450},
    {"id": 3, "sku": "FISH-TANK-20", "name": "Aquarium 20 L", "price_cents": 5900},
    {"id": 4, "sku": "BIRD-SEED-1K", "name": "Bird Seed Mix 1 kg", "price_cents": 899},
    {"id": 5, "sku": "OCTO-PLUSH", "name": "Octopus Plush Toy", "price_cents": 1299},
]


def version() -> str:
    return (HERE / "VERSION").read_text(encoding="utf-8").strip()


def handle(path: str) -> tuple[int, Any]:
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    if parts == ["health"]:
        return 200, {
            "service": NAME,
            "version": version(),
            "status": "healthy",
            "products": len(PRODUCTS),
        }
    if parts == ["products"]:
        return 200, PRODUCTS
    if len(parts) == 2 and parts[0] == "products":
        for product in PRODUCTS:
            if parts[1] in (str(product["id"]), product["sku"]):
                return 200, product
        return 404, {"error": f"no product {parts[1]}"}
    return 404, {"error": f"not found: {path}"}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status, body = handle(self.path)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


if __name__ == "__main__":
    port = int(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PORT", "8082"))
    print(f"{NAME} {version()} listening on http://127.0.0.1:{port}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
