"""Embed the master with a custom strategy registered in code.

    HMAC_SECRET=... python run_master.py --backend http://127.0.0.1:4200/mcp --port 8100

serves a master at http://127.0.0.1:8100/mcp whose `signed` backend is reached with HMAC-signed requests.
"""

from __future__ import annotations

import argparse
import os

import uvicorn
from hmac_auth import HmacAuth

from master_mcp import MasterServer, MultiAuthManager, parse_config, runtime
from master_mcp.app import create_app


def build(backend_url: str, secret: str, port: int) -> MasterServer:
    config = parse_config(
        {
            "master": {"port": port, "store": {"type": "memory"}},
            "servers": [{"id": "signed", "type": "http", "url": backend_url}],
        }
    )
    auth = MultiAuthManager()
    auth.register_strategy(HmacAuth.name, HmacAuth)
    auth.register_server_auth("signed", HmacAuth.name, {"secret": secret})
    master = MasterServer(config)
    master.attach_auth_manager(auth)
    return master


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", required=True)
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    master = build(args.backend, os.environ["HMAC_SECRET"], args.port)
    uvicorn.run(create_app(master), host="127.0.0.1", port=args.port, log_config=None, **runtime.UVICORN)
