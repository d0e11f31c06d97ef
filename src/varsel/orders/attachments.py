"""Which hosts a composed email's attachment URLs may name: one rule for intake (the v2 validation) and for the
sender that fetches them.

Azure Blob Storage (`*.blob.core.windows.net`) always, as in the reference, and the operator's entries
(settings.attachments.allowed_hosts): exact names, or `*.` suffixes. Every host is read as DNS reads it
(varsel.hostnames.dns_name), so an entry in Unicode or upper case matches the URL's host as the fetch will resolve
it. An exact name is the operator's own store: the sender skips the public-address check for it (it may live inside
the network); a host admitted by a suffix must resolve to public addresses.
"""

from __future__ import annotations

from collections.abc import Iterable

from varsel.hostnames import dns_name

AZURE_BLOB_SUFFIX = ".blob.core.windows.net"


def _read(entry: str) -> str:
    try:
        return dns_name(entry.strip("[]"))
    except ValueError:
        return entry.lower()  # matches nothing dns_name reads from a URL, which is what an unreadable entry is


class AttachmentHosts:
    def __init__(self, allowed: Iterable[str]) -> None:
        entries = [entry.strip() for entry in allowed if entry.strip()]
        # As the operator wrote them, for messages that name them.
        self.listed = tuple(entries)
        self.exact = frozenset(_read(entry) for entry in entries if not entry.startswith("*."))
        self._suffixes = (AZURE_BLOB_SUFFIX, *("." + _read(entry[2:]) for entry in entries if entry.startswith("*.")))

    @staticmethod
    def is_azure_blob(host: str) -> bool:
        return host.endswith(AZURE_BLOB_SUFFIX)

    def allows(self, host: str) -> bool:
        """Whether an attachment may be fetched from `host` (read with dns_name)."""
        return host in self.exact or host.endswith(self._suffixes)
