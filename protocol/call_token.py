"""The token that ties an AGI request to a call nobat itself dialled.

ChannelIds are predictable (nobat-p12-a1), so a request naming one proves nothing. The
dialer puts this token on the channel (Originate Variable NOBAT_CALL_TOKEN) and the dialplan
passes it back with the AGI request (`call=`); only a holder of the FastAGI secret can make
one for a given ChannelId.
"""

from __future__ import annotations

import hashlib
import hmac

TOKEN_VARIABLE = "NOBAT_CALL_TOKEN"
TOKEN_ARGUMENT = "call"


def call_token(secret: str, channel_id: str) -> str:
    """The token for one channel nobat originates; "" when there is no secret to sign with."""
    if not secret:
        return ""
    digest = hmac.new(secret.encode(), b"nobat-call:" + channel_id.encode(), hashlib.sha256)
    return digest.hexdigest()[:32]


def token_matches(secret: str, channel_id: str, given: str) -> bool:
    """Constant-time check that `given` is the token of `channel_id`."""
    expected = call_token(secret, channel_id)
    return bool(expected) and hmac.compare_digest(expected.encode(),
                                                  given.encode("utf-8", "surrogateescape"))
