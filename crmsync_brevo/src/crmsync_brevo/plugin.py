"""Registers the Brevo adapter with crmsync (entry point ``brevo`` in the ``crmsync`` group)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from crmsync_core.hookspecs import hookimpl

if TYPE_CHECKING:
    from crmsync_core.adapter import AdapterSpec


@hookimpl
def register_adapters(register: Callable[[AdapterSpec[Any]], None]) -> None:
    from .adapter import SPEC

    register(SPEC)
