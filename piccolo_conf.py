"""Lets the `piccolo` command find the configuration without PICCOLO_CONF set."""

from __future__ import annotations

from config.piccolo_conf import APP_REGISTRY, DB

__all__ = ["APP_REGISTRY", "DB"]
