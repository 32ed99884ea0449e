"""``redact_uri``: credentials out of every URI we log (MLflow params and tags, log lines, Dagster metadata).

Why: tracking and store URIs often carry secrets — ``http://user:pass@mlflow:5000``,
``postgresql://mlflow:PW@db/mlflow``, ``https://host/?token=...`` — and the training config used to be
logged verbatim as MLflow parameters (readable by everyone with access to the experiment) and written into
``trainer.json``, which is itself logged as an artifact. The real URI stays where it is *used* (the
``mlflow_uri`` field of ``train.json``, the process environment); only what is shown is redacted.

Redacted: the whole userinfo (``user:pass@`` -> ``***@``) and the values of query parameters whose name
contains one of :data:`SECRET_WORDS` (``password=``, ``token=``, ``X-Amz-Signature=``, ...); for strings that
are not URLs (e.g. a libpq ``host=db password=x`` string) ``word=value`` pairs of those names. Everything
else is returned unchanged, so applying it to a value without credentials is harmless.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

MASK = "***"
SECRET_WORDS = ("password", "passwd", "token", "secret", "signature", "credential", "apikey", "api_key",
                "access_key")  # a query/keyword name containing one of these (any case) has its value masked
SECRET_NAMES = ("sig", "pwd", "key", "auth", "pass")  # ... and names equal to one of these (Azure SAS: sig=)
_NAMES = "|".join([rf"[\w.-]*{w}[\w.-]*" for w in SECRET_WORDS] + list(SECRET_NAMES))
_KV_RE = re.compile(rf"(?i)(?<![\w.-])({_NAMES})(\s*=\s*)('[^']*'|\"[^\"]*\"|[^\s&;,]+)")
URI_KEYS = re.compile(r"(?i)(uri|url|location|dsn|endpoint)$")  # config keys whose values redact_config redacts
_USERINFO_RE = re.compile(r"(//)[^/?#@\s]*@")


def _secret_name(name: str) -> bool:
    low = name.lower()
    return low in SECRET_NAMES or any(w in low for w in SECRET_WORDS)


def redact_uri(uri: str | None) -> str | None:
    """``uri`` with userinfo and secret query values replaced by ``***``; None stays None."""
    if not isinstance(uri, str) or not uri:
        return uri
    try:
        parts = urlsplit(uri)
    except ValueError:  # e.g. a malformed IPv6 host: fall back to the patterns
        return _KV_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", _USERINFO_RE.sub(rf"\1{MASK}@", uri))
    if not parts.scheme or not (parts.netloc or parts.query):
        return _KV_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", uri)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_secret_name(k) for k, _ in pairs):
            query = "&".join(f"{quote(k, safe='')}={MASK if _secret_name(k) else quote(v, safe='/:')}" for k, v in pairs)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """Free text (an exception message, a log line) with every embedded ``scheme://user:pass@`` and secret
    ``name=value`` masked — for messages that may quote a URI we did not build."""
    text = re.sub(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@\s]*@", rf"\1{MASK}@", text)
    return _KV_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)


def redact_config(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of a config dict with :func:`redact_uri` applied to the values of URI-like keys (``mlflow_uri``,
    ``mlflow_artifact_location``, ``tracking_uri``, ...; :data:`URI_KEYS`), nested dicts included. Other values
    (paths the checkpoint is loaded with) stay exact."""
    return {k: redact_config(v) if isinstance(v, dict) else
            redact_uri(v) if isinstance(v, str) and URI_KEYS.search(k) else v for k, v in config.items()}
