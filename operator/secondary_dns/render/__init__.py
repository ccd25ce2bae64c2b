"""Pure builders of engine configuration: no client, no I/O, no clock, sorted output."""

from __future__ import annotations

from secondary_dns.render.bind9 import Bind9Renderer, render_bind9, render_key_file
from secondary_dns.render.engine import (
    EnginePaths,
    EngineRenderer,
    RenderedConfig,
    RenderError,
    RenderRequest,
    TsigKeyUnavailable,
    ZoneRejection,
    config_hash,
    plan_zones,
)
from secondary_dns.render.selection import zone_selects_server, zones_for_server

__all__ = [
    "Bind9Renderer",
    "EnginePaths",
    "EngineRenderer",
    "RenderError",
    "RenderRequest",
    "RenderedConfig",
    "TsigKeyUnavailable",
    "ZoneRejection",
    "config_hash",
    "plan_zones",
    "render_bind9",
    "render_key_file",
    "renderer_for",
    "zone_selects_server",
    "zones_for_server",
]

_RENDERERS: dict[str, EngineRenderer] = {"bind9": Bind9Renderer()}


def renderer_for(engine: str) -> EngineRenderer:
    """The renderer of a SecondaryServer's spec.engine.type."""
    try:
        return _RENDERERS[engine]
    except KeyError:
        raise RenderError(
            f"engine {engine!r} has no renderer; supported: {', '.join(sorted(_RENDERERS))}"
        ) from None
