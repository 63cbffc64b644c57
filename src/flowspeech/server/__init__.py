"""``flowspeech serve``: an HTTP speech server (OpenAI-compatible ``/v1/audio/speech``, a
voice list, health and Prometheus metrics, and a web page). See ``docs/serving.md``."""

from __future__ import annotations

from flowspeech.server.app import ServerConfig, create_app

__all__ = ["ServerConfig", "create_app"]
