"""Passwords masked wherever a URL is shown: in messages, logs and tracebacks.

Examples
--------
>>> mask_url("redis://app:hunter2@cache:6379/0")
'redis://app:***@cache:6379/0'
"""

from __future__ import annotations

import logging
import re

__all__ = ["MaskingFormatter", "mask_url"]

_MASK = "***"
#: ``scheme://userinfo@``: the userinfo runs to the last ``@`` before the path.
_SCHEME_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][\w+.\-]*://)(?P<userinfo>[^\s/?#]*)@")
#: ``user:password@host`` without a scheme (a Kafka bootstrap server, say).
_BARE_USERINFO = re.compile(
    r"(?<![\w.:/@%+\-])(?P<user>[\w.%+\-]+):(?P<password>[^\s/?#,'\"]*)@(?=[\w\[])"
)
#: A secret passed as a query parameter (``redis://host/0?password=...``).
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&;](?:password|passwd|pwd|pass|secret|token|access_token|api_key|apikey)=)"
    r"[^&#\s'\"]*",
    re.IGNORECASE,
)


def mask_url(text: str) -> str:
    """``text`` with the password of every URL in it masked.

    ``text`` is a URL, a comma-separated list of servers (Kafka's
    ``bootstrap_servers``) or a message quoting them. ``user:password@`` becomes
    ``user:***@``, a lone ``token@`` after a scheme becomes ``***@``, and a
    ``password=`` (or ``token=``, ``secret=``) query parameter loses its value.
    The rest is unchanged. Use it on every URL or server list that is printed,
    logged or put in an error message.

    Examples
    --------
    >>> mask_url("redis://user:secret@host:6379/0")
    'redis://user:***@host:6379/0'
    >>> mask_url("rediss://:s3cret@cache.internal:6380/1?password=again&db=1")
    'rediss://:***@cache.internal:6380/1?password=***&db=1'
    >>> mask_url("alice:pw@b1:9093,bob:p@ss@b2:9093")
    'alice:***@b1:9093,bob:***@b2:9093'
    >>> mask_url("SASL_SSL://alice:pw@b1:9093,SASL_SSL://bob:pw@b2:9093")
    'SASL_SSL://alice:***@b1:9093,SASL_SSL://bob:***@b2:9093'
    >>> mask_url("Redis at redis://default:tok3n@h:6379/0 failed: timeout")
    'Redis at redis://default:***@h:6379/0 failed: timeout'
    >>> mask_url("https://ghp_token@example.com/repo")
    'https://***@example.com/repo'
    >>> mask_url("redis://127.0.0.1:6390/0, broker-1:9092, ops@example.com")
    'redis://127.0.0.1:6390/0, broker-1:9092, ops@example.com'
    """

    def scheme(match: re.Match[str]) -> str:
        userinfo = match["userinfo"]
        if not userinfo:
            return match[0]
        user, colon, _ = userinfo.partition(":")
        return f"{match['scheme']}{user}{colon}{_MASK}@" if colon else f"{match['scheme']}{_MASK}@"

    text = _SCHEME_USERINFO.sub(scheme, text)
    text = _BARE_USERINFO.sub(lambda match: f"{match['user']}:{_MASK}@", text)
    return _SECRET_QUERY.sub(lambda match: f"{match['key']}{_MASK}", text)


class MaskingFormatter(logging.Formatter):
    """A log formatter that passes every line, tracebacks included, through :func:`mask_url`.

    A client library's message (a connection error quoting its URL, say) is masked
    as well as streamlearn's own.

    Examples
    --------
    >>> record = logging.LogRecord(
    ...     "redis", logging.WARNING, __file__, 1, "cannot reach %s", ("redis://u:pw@h/0",), None
    ... )
    >>> MaskingFormatter("%(levelname)s %(message)s").format(record)
    'WARNING cannot reach redis://u:***@h/0'
    """

    def format(self, record: logging.LogRecord) -> str:
        return mask_url(super().format(record))


#: A Kafka topic name: ASCII letters, digits, ``.``, ``_`` and ``-``.
