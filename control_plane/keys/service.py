"""Provider API keys per workspace: validate, encrypt, store write-only, audit, rotate.

Callers see `configured`, the last four characters and a fingerprint, never the key. The only way
back to the plain key is `reveal_key`, which the session-config resolver alone calls.
"""

import hashlib
import hmac
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import httpx
from sqlalchemy import bindparam, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from control_plane.audit import service as audit
from control_plane.auth.principal import Principal
from control_plane.calls.webhooks import valid_ed25519_public_key
from control_plane.changes import notify
from control_plane.core import utcnow
from control_plane.errors import ForbiddenError, InvalidInputError, NotFoundError
from control_plane.keys.crypto import Keyring, Sealed
from control_plane.keys.models import (
    KeyProvider,
    KeyProviderWrite,
    KeyVerification,
    ProviderKeyStatus,
    WorkspaceApiKey,
)
from control_plane.workspaces import service as workspaces
from control_plane.workspaces.models import Workspace

logger = logging.getLogger(__name__)

# Letters, digits and '-_.'; plus '+/=' for base64 keys such as Telnyx's Ed25519 public key.
KEY_CHARACTERS = re.compile(r"^[A-Za-z0-9_\-.+/=]+$")
FIELD_SUFFIX = "_api_key"


def _associated_data(workspace_id: str, provider: str) -> str:
    # Binds a ciphertext to its row: copied into another workspace, it no longer decrypts.
    return f"switchboard:{workspace_id}:{provider}"


FINGERPRINT_PURPOSE = "switchboard key fingerprints v1"


def fingerprint(keyring: Keyring, workspace_id: str, provider: str, key: str) -> str:
    """A keyed hash of the key, bound to its row: nobody without the master key can test a
    candidate key against it, and one key shows a different fingerprint in each workspace."""
    message = f"{workspace_id}:{provider}:{key}".encode()
    digest = hmac.new(keyring.derive_key(FINGERPRINT_PURPOSE), message, hashlib.sha256)
    return "hmac:" + digest.hexdigest()[:16]


def authorize(session: Session, principal: Principal, workspace_id: str) -> Workspace:
    """Admin and the workspace's own tokens only; service tokens never read keys over REST."""
    if principal.is_service and not principal.can_access_workspace(workspace_id):
        raise ForbiddenError(
            "Service tokens cannot read or change API keys over REST.", code="keys_forbidden"
        )
    return workspaces.get_workspace(session, principal, workspace_id)


def list_providers(session: Session) -> Sequence[KeyProvider]:
    return session.exec(select(KeyProvider).order_by(col(KeyProvider.id))).all()


def get_provider(session: Session, provider_id: str) -> KeyProvider:
    provider = session.get(KeyProvider, provider_id)
    if provider is None:
        known = ", ".join(p.id for p in list_providers(session))
        raise NotFoundError(
            f"Unknown key provider '{provider_id}'. Known providers: {known}.",
            code="provider_not_found",
        )
    return provider


def put_provider(
    session: Session, provider_id: str, body: KeyProviderWrite, *, actor: str
) -> KeyProvider:
    if not re.fullmatch(r"[a-z0-9]{2,32}", provider_id):
        raise InvalidInputError(
            "Provider ids are 2 to 32 lowercase letters or digits.", code="invalid_provider"
        )
    if body.min_length > body.max_length:
        raise InvalidInputError("min_length is larger than max_length.", code="invalid_provider")
    provider = session.get(KeyProvider, provider_id)
    before = provider.model_dump() if provider else None
    provider = provider or KeyProvider(id=provider_id, display_name=body.display_name)
    for field, value in body.model_dump().items():
        setattr(provider, field, value)
    session.add(provider)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="key_provider.put",
        target=provider_id,
        before=before,
        after=provider.model_dump(),
    )
    return provider


def validate_key(provider: KeyProvider, raw: str) -> str:
    """Trim and check a key against its provider's rules. Messages never contain the key."""
    key = raw.strip()
    name = provider.display_name
    if provider.key_prefix and not key.startswith(provider.key_prefix):
        raise InvalidInputError(
            f"{name} API keys start with '{provider.key_prefix}'.", code="invalid_api_key"
        )
    if not provider.min_length <= len(key) <= provider.max_length:
        raise InvalidInputError(
            f"{name} API keys are {provider.min_length} to {provider.max_length} characters long "
            f"(got {len(key)}).",
            code="invalid_api_key",
        )
    if not KEY_CHARACTERS.match(key):
        raise InvalidInputError(
            f"{name} API keys contain only letters, digits, '-', '_', '.', '+', '/' and '='.",
            code="invalid_api_key",
        )
    if provider.id == "telnyx" and not valid_ed25519_public_key(key):
        raise InvalidInputError(
            f"The {name} is the base64 Ed25519 public key shown in the Telnyx portal.",
            code="invalid_api_key",
        )
    return key


def status(session: Session, principal: Principal, workspace_id: str) -> list[ProviderKeyStatus]:
    authorize(session, principal, workspace_id)
    return _status(session, workspace_id)


def _status(session: Session, workspace_id: str) -> list[ProviderKeyStatus]:
    stored = {
        row.provider: row
        for row in session.exec(
            select(WorkspaceApiKey).where(WorkspaceApiKey.workspace_id == workspace_id)
        )
    }
    result = []
    for provider in list_providers(session):
        row = stored.get(provider.id)
        result.append(
            ProviderKeyStatus(
                provider=provider.id,
                display_name=provider.display_name,
                configured=row is not None,
                last4=row.last4 if row else None,
                fingerprint=row.fingerprint if row else None,
                updated_at=row.updated_at if row else None,
                updated_by=row.updated_by if row else None,
            )
        )
    return result


def _lock_workspace(session: Session, workspace_id: str) -> None:
    """Serialize key writes per workspace and bump its config revision in the same statement.

    Being the transaction's first write, it takes PostgreSQL's row lock and SQLite's write lock
    before anything is read, so two concurrent writers each see the other's result.
    """
    session.execute(
        update(Workspace)
        .where(col(Workspace.id) == workspace_id)
        .values(revision=Workspace.revision + 1)
    )
    notify(session, workspaces.config_topic(workspace_id))


def _provider_for_field(session: Session, field: str) -> KeyProvider:
    if not field.endswith(FIELD_SUFFIX):
        raise InvalidInputError(
            f"Unknown field '{field[:64]}': use <provider>_api_key, e.g. xai_api_key.",
            code="invalid_api_key_field",
        )
    provider_id = field.removesuffix(FIELD_SUFFIX)
    provider = session.get(KeyProvider, provider_id)
    if provider is None:
        raise InvalidInputError(
            f"Unknown key provider '{provider_id[:32]}' in field '{field[:64]}'.",
            code="provider_not_found",
        )
    return provider


@dataclass(frozen=True)
class KeyChange:
    provider: KeyProvider
    new_key: str | None


def plan_changes(session: Session, requested: Mapping[str, object]) -> list[KeyChange]:
    """Validate every requested change before any is applied: all or nothing."""
    changes = []
    for field, value in sorted(requested.items()):
        provider = _provider_for_field(session, field)
        if value is None:
            changes.append(KeyChange(provider, None))
        elif isinstance(value, str):
            changes.append(KeyChange(provider, validate_key(provider, value)))
        else:
            raise InvalidInputError(
                f"'{field[:64]}' must be a string, or null to remove the key.",
                code="invalid_api_key",
            )
    return changes


def apply_changes(
    session: Session,
    keyring: Keyring,
    principal: Principal,
    workspace_id: str,
    changes: list[KeyChange],
) -> list[ProviderKeyStatus]:
    authorize(session, principal, workspace_id)
    if changes:
        _lock_workspace(session, workspace_id)
    for change in changes:
        if change.new_key is None:
            _delete(session, principal, workspace_id, change.provider.id)
        else:
            _store(session, keyring, principal, workspace_id, change.provider.id, change.new_key)
    return _status(session, workspace_id)


def _store(
    session: Session,
    keyring: Keyring,
    principal: Principal,
    workspace_id: str,
    provider: str,
    key: str,
) -> None:
    row = session.get(WorkspaceApiKey, (workspace_id, provider))
    sealed = keyring.seal(key, _associated_data(workspace_id, provider))
    new_fingerprint = fingerprint(keyring, workspace_id, provider, key)
    old_fingerprint = row.fingerprint if row else None
    if row is None:
        row = WorkspaceApiKey(
            workspace_id=workspace_id,
            provider=provider,
            ciphertext=sealed.ciphertext,
            nonce=sealed.nonce,
            master_key_id=sealed.master_key_id,
            last4=key[-4:],
            fingerprint=new_fingerprint,
            updated_by=principal.actor,
        )
    row.ciphertext = sealed.ciphertext
    row.nonce = sealed.nonce
    row.master_key_id = sealed.master_key_id
    row.last4 = key[-4:]
    row.fingerprint = new_fingerprint
    row.updated_at = utcnow()
    row.updated_by = principal.actor
    session.add(row)
    session.flush()
    audit.record(
        session,
        actor=principal.actor,
        action="key.replace" if old_fingerprint else "key.set",
        workspace_id=workspace_id,
        target=provider,
        before={"fingerprint": old_fingerprint} if old_fingerprint else None,
        after={"fingerprint": new_fingerprint, "last4": key[-4:]},
    )
    logger.info(
        "api key %s for workspace %s by %s",
        "replaced" if old_fingerprint else "set",
        workspace_id,
        principal.actor,
    )


def _delete(session: Session, principal: Principal, workspace_id: str, provider: str) -> bool:
    row = session.get(WorkspaceApiKey, (workspace_id, provider))
    if row is None:
        return False
    session.delete(row)
    session.flush()
    audit.record(
        session,
        actor=principal.actor,
        action="key.delete",
        workspace_id=workspace_id,
        target=provider,
        before={"fingerprint": row.fingerprint, "last4": row.last4},
    )
    return True


def delete_key(session: Session, principal: Principal, workspace_id: str, provider_id: str) -> None:
    authorize(session, principal, workspace_id)
    get_provider(session, provider_id)
    _lock_workspace(session, workspace_id)
    if not _delete(session, principal, workspace_id, provider_id):
        raise NotFoundError(
            f"No {provider_id} API key is configured for this workspace.",
            code="api_key_not_configured",
        )


def reveal_key(session: Session, keyring: Keyring, workspace_id: str, provider: str) -> str | None:
    """The plain key, for the session-config resolver only. None when not configured."""
    # A Core query, not the ORM: this runs on the session-config hot path.
    row = (
        session.connection()
        .execute(_SEALED_KEY, {"workspace_id": workspace_id, "provider": provider})
        .first()
    )
    if row is None:
        return None
    return keyring.open(
        Sealed(row.master_key_id, row.nonce, row.ciphertext),
        _associated_data(workspace_id, provider),
    )


_KEYS = WorkspaceApiKey.__table__  # type: ignore[attr-defined]
_SEALED_KEY = (
    sa_select(_KEYS.c.master_key_id, _KEYS.c.nonce, _KEYS.c.ciphertext)
    .where(_KEYS.c.workspace_id == bindparam("workspace_id"))
    .where(_KEYS.c.provider == bindparam("provider"))
)


def has_unkeyed_fingerprints(session: Session) -> bool:
    query = select(WorkspaceApiKey.workspace_id).where(
        col(WorkspaceApiKey.fingerprint).startswith("sha256:")
    )
    return session.exec(query.limit(1)).first() is not None


def refresh_fingerprints(session: Session, keyring: Keyring) -> int:
    """Recompute fingerprints that were not made with the active master key: after a master
    rotation, and once for keys stored with plain SHA-256 fingerprints before they were keyed.
    Returns how many changed."""
    changed = 0
    for row in session.exec(select(WorkspaceApiKey)).all():
        associated_data = _associated_data(row.workspace_id, row.provider)
        plain = keyring.open(Sealed(row.master_key_id, row.nonce, row.ciphertext), associated_data)
        current = fingerprint(keyring, row.workspace_id, row.provider, plain)
        if row.fingerprint != current:
            row.fingerprint = current
            session.add(row)
            changed += 1
    session.flush()
    return changed


def rotate_master(session: Session, keyring: Keyring, *, actor: str) -> int:
    """Re-encrypt every key not yet under the active master key.

    Runs in the caller's transaction. Rows already re-encrypted carry the new key id, so an
    interrupted rotation resumes where it stopped when run again.
    """
    rows = session.exec(
        select(WorkspaceApiKey).where(WorkspaceApiKey.master_key_id != keyring.active_id)
    ).all()
    previous = sorted({row.master_key_id for row in rows})
    for row in rows:
        associated_data = _associated_data(row.workspace_id, row.provider)
        plain = keyring.open(Sealed(row.master_key_id, row.nonce, row.ciphertext), associated_data)
        sealed = keyring.seal(plain, associated_data)
        row.ciphertext, row.nonce, row.master_key_id = (
            sealed.ciphertext,
            sealed.nonce,
            sealed.master_key_id,
        )
        session.add(row)
    session.flush()
    refresh_fingerprints(session, keyring)
    audit.record(
        session,
        actor=actor,
        action="master_key.rotate",
        before={"master_key_ids": previous},
        after={"master_key_id": keyring.active_id},
        details={"re_encrypted": len(rows)},
    )
    return len(rows)


def verify_xai_key(base_url: str, key: str, timeout: float) -> KeyVerification:
    """Ask xAI whether it knows the key. Unreachable is reported, never blocking."""
    try:
        response = httpx.get(
            f"{base_url.rstrip('/')}/v1/api-key",
            headers={"Authorization": f"Bearer {key}"},
            timeout=timeout,
        )
    except httpx.HTTPError as exc:
        return KeyVerification(
            provider="xai",
            result="unreachable",
            detail=f"xAI unreachable ({type(exc).__name__}); key stored unverified",
        )
    if response.status_code in (401, 403):
        raise InvalidInputError(
            "xAI rejected this API key; nothing was stored. Check the key at console.x.ai.",
            code="api_key_rejected",
        )
    if response.status_code >= 400:
        return KeyVerification(
            provider="xai",
            result="unreachable",
            detail=f"xAI answered {response.status_code}; key stored unverified",
        )
    return KeyVerification(provider="xai", result="valid", detail="xAI accepted the key")
