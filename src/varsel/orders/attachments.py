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

from varsel.hostnames import HostAllowList

AZURE_BLOB_SUFFIX = ".blob.core.windows.net"


class AttachmentHosts(HostAllowList):
    def __init__(self, allowed: Iterable[str]) -> None:
        super().__init__(allowed, suffixes=(AZURE_BLOB_SUFFIX,))

    @staticmethod
    def is_azure_blob(host: str) -> bool:
        return host.endswith(AZURE_BLOB_SUFFIX)
