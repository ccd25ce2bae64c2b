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
from secondary_dns.render.knot import KnotRenderer, render_knot
from secondary_dns.render.selection import zone_selects_server, zones_for_server

__all__ = [
    "Bind9Renderer",
    "EnginePaths",
    "EngineRenderer",
    "KnotRenderer",
    "RenderError",
    "RenderRequest",
    "RenderedConfig",
    "TsigKeyUnavailable",
    "ZoneRejection",
    "config_hash",
    "plan_zones",
    "render_bind9",
    "render_key_file",
    "render_knot",
    "renderer_for",
    "zone_selects_server",
    "zones_for_server",
]

_RENDERERS: dict[str, EngineRenderer] = {
    renderer.engine: renderer for renderer in (Bind9Renderer(), KnotRenderer())
}


def renderer_for(engine: str) -> EngineRenderer:
    """The renderer of a SecondaryServer's spec.engine.type."""
    try:
        return _RENDERERS[engine]
    except KeyError:
        raise RenderError(
            f"engine {engine!r} has no renderer; supported: {', '.join(sorted(_RENDERERS))}"
        ) from None
