"""Demo data for `switchboard seed --demo`: two workspaces, a few agents, fresh demo tokens."""

from sqlmodel import Session, select

from control_plane.auth import service as auth_service
from control_plane.auth.models import User
from control_plane.auth.passwords import Passwords
from control_plane.auth.principal import SYSTEM
from control_plane.rollout import service as rollout
from control_plane.rollout.models import CohortWrite
from control_plane.workspaces import service as workspaces
from control_plane.workspaces.models import (
    AgentCreate,
    BuiltinTools,
    FunctionTool,
    Workspace,
    WorkspaceCreate,
    XSearchConfig,
)

DEMO_WORKSPACES = [("acme", "Acme Support"), ("globex", "Globex Sales")]

LOOKUP_ORDER = FunctionTool(
    name="lookup_order",
    description="Look up an order by its number and return its status.",
    parameters={
        "type": "object",
        "properties": {"order_number": {"type": "string", "description": "e.g. A-1042"}},
        "required": ["order_number"],
    },
)

DEMO_AGENTS = [
    AgentCreate(
        name="Ava (Grok)",
        pricing_tier="grok-realtime",
        voice="marin",
        instructions="You are Ava, Acme's friendly support agent. Keep answers short.",
        language="en",
        tools=[LOOKUP_ORDER],
        builtin_tools=BuiltinTools(
            web_search=True, x_search=XSearchConfig(allowed_x_handles=["acme"])
        ),
    ),
    AgentCreate(
        name="Max (Premium)",
        pricing_tier="premium",
        voice="cedar",
        instructions="You are Max, Acme's billing specialist.",
        language="en",
        tools=[LOOKUP_ORDER],
    ),
    AgentCreate(
        name="Lena (Balanced)",
        pricing_tier="balanced",
        voice="shimmer",
        instructions="Eres Lena, la agente de soporte de Acme.",
        language="es",
    ),
]

# Demo accounts for the pages; real ones come from `switchboard users create`.
DEMO_PASSWORD = "switchboard-demo"  # noqa: S105 - a published demo credential
DEMO_USERS: list[tuple[str, str, str | None]] = [
    ("admin@example.com", "admin", None),
    ("ava@acme.example", "member", "acme"),
    ("gus@globex.example", "member", "globex"),
]

DEMO_TOKEN_SCOPES = {
    "demo-admin": ["admin"],
    "demo-service": ["service"],
    "demo-acme": ["workspace:acme"],
    "demo-globex": ["workspace:globex"],
}


def seed_demo(session: Session, passwords: Passwords) -> dict[str, str]:
    """Create demo workspaces and agents if missing; issue fresh demo tokens (old ones revoked)."""
    for workspace_id, name in DEMO_WORKSPACES:
        if session.get(Workspace, workspace_id) is None:
            workspaces.create_workspace(
                session, SYSTEM, WorkspaceCreate(id=workspace_id, name=name)
            )
    if not workspaces.list_agents(session, SYSTEM, "acme")[0]:
        for agent in DEMO_AGENTS:
            workspaces.create_agent(session, SYSTEM, "acme", agent, gate=None)
    if not workspaces.list_agents(session, SYSTEM, "globex")[0]:
        workspaces.create_agent(
            session,
            SYSTEM,
            "globex",
            AgentCreate(name="Gus (Grok)", pricing_tier="grok-realtime", voice="Rex"),
            gate=None,  # demo data: the flag is staged below
        )

    internal = rollout.get_cohort(session, "internal")
    if "acme" not in internal.members:
        members = [*internal.members, "acme"]
        rollout.put_cohort(session, None, "internal", CohortWrite(members=members), actor="demo")

    for email, role, member_of in DEMO_USERS:
        if session.exec(select(User).where(User.email == email)).first() is None:
            auth_service.create_user(
                session,
                passwords,
                email=email,
                password=DEMO_PASSWORD,
                role=role,
                workspace_id=member_of,
            )

    tokens: dict[str, str] = {}
    for name, scopes in DEMO_TOKEN_SCOPES.items():
        auth_service.revoke_tokens_named(session, name)
        _, token = auth_service.create_token(session, name=name, scopes=scopes)
        tokens[name] = token
    return tokens
