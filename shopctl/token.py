"""`shopctl token mint`: a user or admin JWT the gateway accepts (demo and operations use)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import jwt
import typer

from gateway.config import GatewaySettings
from meshkit.settings import load_settings

app = typer.Typer(no_args_is_help=True, help="Mint bearer tokens for the HTTP gateway.")


def mint_token(
    settings: GatewaySettings, *, user: str, roles: list[str], ttl_seconds: int, private_key: str = ""
) -> str:
    """A JWT with the gateway's claims: sub, roles, aud, iat, exp (and iss when configured)."""
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": user,
        "roles": roles,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + ttl_seconds,
    }
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_algorithm == "HS256":
        return jwt.encode(claims, settings.jwt_verification_key(), algorithm="HS256")
    if not private_key:
        raise typer.BadParameter(
            "RS256 is configured: pass --private-key PEM_FILE", param_hint="--private-key"
        )
    return jwt.encode(claims, Path(private_key).read_text(), algorithm=settings.jwt_algorithm)


@app.command()
def mint(
    user: Annotated[str, typer.Option("--user", help="the user id (JWT sub)")],
    role: Annotated[list[str] | None, typer.Option("--role", help="a role, e.g. admin; repeatable")] = None,
    ttl: Annotated[int, typer.Option("--ttl", help="lifetime in seconds", min=1)] = 3600,
    private_key: Annotated[str, typer.Option("--private-key", help="PEM file (RS256 only)")] = "",
) -> None:
    """Print a signed token for USER (with SHOPMESH_JWT_SECRET unless RS256 is configured)."""
    settings = load_settings(GatewaySettings)
    if settings.uses_demo_secret:
        typer.echo("warning: signed with the public demo secret (SHOPMESH_JWT_SECRET unset)", err=True)
    typer.echo(
        mint_token(settings, user=user, roles=list(role or []), ttl_seconds=ttl, private_key=private_key)
    )


def print_demo_tokens(_mesh: object = None) -> None:
    """For `make run` (a run-mesh post-start step): a demo user and an admin token, and a warning
    when they are signed with the public demo secret."""
    settings = load_settings(GatewaySettings)
    if settings.uses_demo_secret:
        print("WARNING: SHOPMESH_JWT_SECRET is the public demo secret; set your own outside a demo.")
    if settings.jwt_algorithm != "HS256":
        print("gateway uses RS256: mint tokens with `shopctl token mint --private-key ...`")
        return
    day = 24 * 3600
    print(
        "demo user token  (sub=demo-user):", mint_token(settings, user="demo-user", roles=[], ttl_seconds=day)
    )
    print(
        "demo admin token (sub=demo-admin):",
        mint_token(settings, user="demo-admin", roles=["admin"], ttl_seconds=day),
    )
