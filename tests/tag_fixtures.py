"""Shared by the tag tests: a workspace tagged without a server."""

from __future__ import annotations

from curate.session import Workspace
from tests.conftest import ScriptedBackend


def tag_poetry_and_weather(ws: Workspace) -> None:
    """Tag every row of ``ws`` "poetry" and "weather" (a scripted backend's reply), and normalize them into ``tags``."""
    from curate.tags import Normalizer, Tagger, normalize

    words = ScriptedBackend(lambda req: '{"tags": [{"tag": "poetry", "explanation": "a"}, '
                                        '{"tag": "weather", "explanation": "b"}]}')
    ws.apply(Tagger(words), progress=False)
    normalize(ws, Normalizer(min_frequency=None, semantic=False, association=False))
