"""The master keyring, for the routes and pages that store provider keys."""

from typing import Annotated

from fastapi import Depends, Request

from control_plane.keys.crypto import Keyring


def get_keyring(request: Request) -> Keyring:
    keyring: Keyring = request.app.state.keyring
    return keyring


KeyringDep = Annotated[Keyring, Depends(get_keyring)]
