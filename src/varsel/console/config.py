"""Settings of the web console (VARSEL_CONSOLE__…): session keys and lifetimes, and OpenID Connect sign-in."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr


class OidcSettings(BaseModel):
    """Sign-in through an OpenID Connect provider (authorization code flow with PKCE); off while issuer is unset."""

    # The issuer's URL, exactly as its ID tokens name it (iss); its discovery document is read from
    # {issuer}/.well-known/openid-configuration.
    issuer: str | None = None
    client_id: str = ""
    client_secret: SecretStr | None = None
    scopes: list[str] = Field(default_factory=lambda: ["openid", "profile", "email"])
    # The ID token claim naming the service owner (org) the person acts for, e.g. "urn:altinn:org" or "org".
    org_claim: str = "org"
    # The claim, and the value in it (the claim may be a string or a list), that makes the person an admin.
    admin_claim: str = "roles"
    admin_value: str = "varsel-admin"
    # Where the provider sends the browser back; register {public_url}{redirect_path} with the provider.
    redirect_path: str = "/console/sign-in/oidc/callback"
    # Tolerated clock difference with the provider when checking the ID token's times, in seconds.
    leeway_seconds: int = 60


class ConsoleSettings(BaseModel):
    # Signs console session cookies and the OpenID Connect flow's cookie. Unset: a key is generated once and kept
    # in the data folder (console-secret-key), so a restart keeps everyone signed in; several API replicas must
    # share one key, so a scale-out deployment sets it.
    secret_key: SecretStr | None = None
    # How long a session lasts after sign-in (it is not extended while used: sign in again after it).
    session_minutes: int = Field(default=8 * 60, ge=1)
    # How long a one-time sign-in link from `varsel console login` stays valid.
    link_minutes: int = Field(default=15, ge=1)
    oidc: OidcSettings = Field(default_factory=OidcSettings)
