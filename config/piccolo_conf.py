"""Piccolo's configuration module (`PICCOLO_CONF=config.piccolo_conf`).

Piccolo finds its engine through this module, for the tables and for migrations alike. The
engine is created unconnected; `server.db.pool.connect_engine` points it at the database the
settings name (or the embedded server) before anything runs. No extensions are requested: the
schema uses only core PostgreSQL (`gen_random_uuid()`), which the embedded server also has.
Its transactions always give their connection back (`server.db.transactions`).
"""

from __future__ import annotations

from piccolo.conf.apps import AppRegistry

from server.db.transactions import ReleasingEngine

DB = ReleasingEngine(config={}, extensions=())

APP_REGISTRY = AppRegistry(apps=["server.db.piccolo_app"])
