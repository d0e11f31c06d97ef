"""`varsel api` with the providers configured, for the instant step: `python -m bench.instant_api --port P`.

The instant endpoints call the SMS provider from the API process itself, but `varsel api` (as of b65d11d) builds
its services with outbox providers ("this process sends nothing"), so its instant orders would go to the outbox
and never reach the peer. Until the command builds the configured providers, the bench runs the command exactly
as it is with that one choice turned around; once it does, this changes nothing. The step checks that its probe
order reached the peer either way.
"""

from __future__ import annotations

import sys
from typing import Any

from varsel import cli


def main() -> None:
    build = cli._build_or_exit

    def with_providers(settings: Any, *, providers: bool = True) -> Any:
        return build(settings)

    cli._build_or_exit = with_providers
    sys.argv = ["varsel", "api", *sys.argv[1:]]
    cli.main()


if __name__ == "__main__":
    main()
