"""Who is calling, and what they may touch."""

from dataclasses import dataclass, field

from control_plane.auth.models import ADMIN_SCOPE, SERVICE_SCOPE, WORKSPACE_SCOPE_PREFIX


@dataclass(frozen=True)
class Principal:
    name: str
    scopes: frozenset[str]
    token_id: int | None = None
    user_id: int | None = None
    workspace_ids: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        workspaces = frozenset(
            s[len(WORKSPACE_SCOPE_PREFIX) :]
            for s in self.scopes
            if s.startswith(WORKSPACE_SCOPE_PREFIX)
        )
        object.__setattr__(self, "workspace_ids", workspaces)

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        if self.user_id is not None:
            return f"user:{self.name}"
        if self.token_id is not None:
            return f"token:{self.token_id}:{self.name}"
        return self.name

    @property
    def is_admin(self) -> bool:
        return ADMIN_SCOPE in self.scopes

    @property
    def is_service(self) -> bool:
        return SERVICE_SCOPE in self.scopes

    def can_access_workspace(self, workspace_id: str) -> bool:
        return self.is_admin or workspace_id in self.workspace_ids


SYSTEM = Principal(name="system", scopes=frozenset({ADMIN_SCOPE}))
