"""Where an OpenAI-compatible backend sends its requests and what it records and says of that: the base URL the
openai client uses (``--base-url``, else ``$OPENAI_BASE_URL``, else OpenAI's), that URL without credentials (for
provenance and messages), and what a server's refusal of the run's settings (key, access, model) tells the user."""

from __future__ import annotations

import os
import re
from urllib.parse import unquote, urlsplit, urlunsplit

from curate.errors import python_and_cli

OPENAI_URL = "https://api.openai.com/v1"  # the openai client's own base URL, where none is given
BASE_URL_ENV = "OPENAI_BASE_URL"  # read by the openai client where no base_url is given

# query parameters whose value is a credential (?api-key=, ?key=, ?access_token=, ?sig=, Azure Functions' ?code=)
SECRET_QUERY_KEY = re.compile(r"key|token|sig|secret|passw|pwd|auth|credential|session|^code$", re.IGNORECASE)
HIDDEN = "***"

# statuses that refuse the run's settings rather than a request: every other row would get the same answer
REFUSED_SETTINGS = {401: "the API key", 403: "this account or key access to the model",
                    404: f"the model name or the endpoint ({python_and_cli('model=, base_url=', '--model, --base-url')})"}


def transient_status(status: int) -> bool:
    """An HTTP status a later try may not get (timeout, conflict, rate limit, a server error); any other 4xx is the
    request's own, every try alike. The one rule of the online backend, the batch API's and a batch's answers."""
    return status in (408, 409, 429) or status >= 500


def used_base_url(base_url: str | None) -> str:
    """The base URL the openai client sends to: ``base_url``, else ``$OPENAI_BASE_URL``, else OpenAI's."""
    return base_url or os.environ.get(BASE_URL_ENV) or OPENAI_URL


def without_credentials(url: str | None) -> str | None:
    """``url`` without a user name or password (``http://user:sk-...@host/v1``) and without the value of a query
    parameter that holds a credential (``?api-key=...``, ``&sig=...``): what provenance records and messages show."""
    if not url:
        return url
    parts = urlsplit(url)
    if "@" in parts.netloc:
        parts = parts._replace(netloc=f"{HIDDEN}@" + parts.netloc.rsplit("@", 1)[1])  # host and port as written
    if parts.query:
        pairs = [pair.partition("=") for pair in parts.query.split("&")]
        parts = parts._replace(query="&".join(
            f"{name}={HIDDEN}" if value and SECRET_QUERY_KEY.search(unquote(name)) else name + sep + value
            for name, sep, value in pairs))
    return urlunsplit(parts)


def sent_to(model: str, base_url: str | None) -> str:
    """The values a refusal names: ``model 'M' at URL`` (the URL the client used, without credentials)."""
    return f"model {model!r} at {without_credentials(used_base_url(base_url))}"


def refused_settings(status: int, *, model: str, base_url: str | None, api_key_env: str, key_unset: bool) -> str:
    """What the server's ``status`` (one of REFUSED_SETTINGS) refuses, with the values sent: the model and the URL
    (for a 401 with ``key_unset``, ``$api_key_env`` empty: a loopback server got a placeholder key, that and the URL).
    One wording for the online and the batch backends."""
    if status == 404:  # the values, not only the options' names (which the batch backend's message gives)
        return (f"the model name or the endpoint ({sent_to(model, base_url)}; check "
                f"{python_and_cli('model= and base_url=', '--model and --base-url')})")
    if status == 401 and key_unset:
        return (f"the API key (${api_key_env} is not set, so a placeholder key was sent to "
                f"{without_credentials(used_base_url(base_url))}, as to a local server that needs none: set it, or "
                f"name the variable that holds the key with {python_and_cli('api_key_env=', '--api-key-env')})")
    return f"{REFUSED_SETTINGS[status]} ({sent_to(model, base_url)})"
