"""Reading a token from an Authorization header, the one way every path does it.

`Bearer <token>` with the scheme in any case (RFC 9110 makes it case-insensitive). Unleash SDKs
send their client token bare, so the client API also takes a header that is only the token.
"""


def bearer_token(authorization: str) -> str | None:
    """The token of a `Bearer <token>` header; None when the header is not that."""
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def client_token(authorization: str) -> str:
    """What an Unleash SDK presents: a bearer token, or the header itself as the token."""
    return bearer_token(authorization) or authorization.strip()
