"""Who a console session acts as."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    """Who a console session acts as: one service owner (org), or an admin, who sees every org's."""

    org: str | None
    admin: bool
    # Who signed in, for display and logs: the OpenID Connect subject or e-mail, or "link".
    name: str = "link"

    def __post_init__(self) -> None:
        if self.admin == bool(self.org):
            raise ValueError("a console principal is either an org or an admin")

    @property
    def label(self) -> str:
        return "admin" if self.admin else str(self.org)

    def may_see(self, creator: str) -> bool:
        """Tenancy: an org sees only what it created; an admin sees all."""
        return self.admin or creator == self.org
