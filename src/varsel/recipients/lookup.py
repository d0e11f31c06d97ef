"""The look-up rules: from an order's recipients to the addresses that will get a notification, and why others
will not. Used at order time (for the answer's recipientLookup and the preview) and again at send time.

Every registry is asked once per order for all its recipients, never once per recipient.

A person's contact details last confirmed more than 18 months before now count as absent unless the order says
useStaleContactInformation (a person whose confirmation time is unknown counts as current). A self-identified user
is looked up by the canonical form of its URN; an ID-porten email identity is its own address.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from varsel.clock import Clock
from varsel.orders.addresses import normalize_email_address, normalize_mobile_number
from varsel.orders.drafts import RecipientSpec
from varsel.orders.vocabulary import NotificationChannel, RecipientLookupStatus
from varsel.recipients.identities import (
    ExternalIdentity,
    ExternalIdentityKind,
    bare_resource_id,
    parse_external_identity,
)
from varsel.recipients.registry import (
    ContactRegistry,
    ExternalIdentityContact,
    OrganizationContact,
    PersonContact,
    UserContactPoint,
)

DEFAULT_RESOURCE_ACTION = "read"
# A person's contact details confirmed longer ago than this count as absent, unless the order allows stale ones.
STALE_AFTER_MONTHS = 18

_NORWEGIAN_MOBILE = re.compile(r"^[49][0-9]{7}$")


class Medium(StrEnum):
    EMAIL = "email"
    SMS = "sms"


class Outcome(StrEnum):
    ADDRESSED = "addressed"  # the order gave the address itself: nothing to look up
    FOUND = "found"  # looked up, and at least one address found
    RESERVED = "reserved"  # a person reserved against digital contact, and the order may not ignore it
    MISSING_CONTACT = "missing_contact"  # looked up, no usable address on the order's channel


class Reason(StrEnum):
    RESERVED = "reserved"
    NOT_FOUND = "not_found"
    NO_CONTACT = "no_contact"
    NOT_AUTHORISED = "not_authorised"
    INVALID_ADDRESS = "invalid_address"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class Address:
    medium: Medium
    address: str
    user_id: str | None = None  # set when the address is a user's contact point for an organisation


@dataclass(frozen=True)
class Unreached:
    """Someone or some address that gets nothing from this order, and why."""

    reason: Reason
    detail: str
    address: str | None = None
    user_id: str | None = None


@dataclass(frozen=True)
class ResolvedRecipient:
    recipient: RecipientSpec
    outcome: Outcome
    addresses: tuple[Address, ...] = ()
    name: str | None = None
    # What $recipientNumber$ becomes: the organisation number for organisations, empty otherwise.
    number: str | None = None
    unreached: tuple[Unreached, ...] = ()


@dataclass(frozen=True)
class LookupSummary:
    """What the registries say of an order's looked-up recipients: reserved persons, and who has no contact."""

    status: RecipientLookupStatus
    is_reserved: list[str]
    missing_contact: list[str]


@dataclass(frozen=True)
class LookupResult:
    recipients: tuple[ResolvedRecipient, ...]

    def summary(self) -> LookupSummary | None:
        """The order answer's recipientLookup; None when every recipient came with its own address."""
        looked_up = [r for r in self.recipients if r.outcome is not Outcome.ADDRESSED]
        if not looked_up:
            return None
        reserved = _unique(r.recipient.national_identity_number for r in looked_up if r.outcome is Outcome.RESERVED)
        missing = _unique(
            r.recipient.national_identity_number or r.recipient.organization_number or r.recipient.external_identity
            for r in looked_up
            if r.outcome is Outcome.MISSING_CONTACT
        )
        failed = sum(1 for r in looked_up if r.outcome in (Outcome.RESERVED, Outcome.MISSING_CONTACT))
        if failed == 0:
            status = RecipientLookupStatus.SUCCESS
        elif failed == len(looked_up):
            status = RecipientLookupStatus.FAILED
        else:
            status = RecipientLookupStatus.PARTIAL_SUCCESS
        return LookupSummary(status=status, is_reserved=reserved, missing_contact=missing)


def months_before(moment: datetime, months: int) -> datetime:
    """The same time of day `months` calendar months earlier; a day the month lacks becomes its last (as .NET's
    AddMonths: 31 August less 18 months is 28 or 29 February)."""
    index = moment.year * 12 + moment.month - 1 - months
    year, month = divmod(index, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


def _unique(values: Iterable[str | None]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


def normalize_registry_mobile(raw: str | None) -> str | None:
    """Registries hold numbers as people typed them: 00 becomes +, 8 digits starting 4 or 9 are Norwegian."""
    if not raw:
        return None
    value = re.sub(r"[\s\-()]", "", raw)
    if _NORWEGIAN_MOBILE.match(value):
        value = "+47" + value
    return normalize_mobile_number(value)


@dataclass
class _Collector:
    """Addresses for one recipient, de-duplicated (emails case-insensitively), with what was left out."""

    addresses: list[Address] = field(default_factory=list)
    unreached: list[Unreached] = field(default_factory=list)
    _seen: set[tuple[Medium, str]] = field(default_factory=set)

    def add(self, address: Address) -> None:
        key = (address.medium, address.address.lower() if address.medium is Medium.EMAIL else address.address)
        if key in self._seen:
            self.unreached.append(
                Unreached(Reason.DUPLICATE, "The address is already reached for this recipient.", address.address,
                          address.user_id)
            )  # fmt: skip
            return
        self._seen.add(key)
        self.addresses.append(address)


def _usable(
    emails: Iterable[str | None], mobiles: Iterable[str | None], collector: _Collector, user_id: str | None = None
) -> tuple[list[str], list[str]]:
    """The registry's addresses in sendable form; invalid ones are noted and dropped."""
    good_emails: list[str] = []
    good_mobiles: list[str] = []
    for raw in emails:
        if not raw:
            continue
        email = normalize_email_address(raw)
        if email is None:
            collector.unreached.append(
                Unreached(Reason.INVALID_ADDRESS, "The registry's email address is invalid.", raw, user_id)
            )
        else:
            good_emails.append(email)
    for raw in mobiles:
        if not raw:
            continue
        mobile = normalize_registry_mobile(raw)
        if mobile is None:
            collector.unreached.append(
                Unreached(Reason.INVALID_ADDRESS, "The registry's mobile number is not a valid mobile number.", raw,
                          user_id)
            )  # fmt: skip
        else:
            good_mobiles.append(mobile)
    return good_emails, good_mobiles


def choose(channel: NotificationChannel, emails: Sequence[str], mobiles: Sequence[str]) -> list[tuple[Medium, str]]:
    """Which of a party's addresses the channel uses: all of a kind, the preferred kind if any, or both kinds."""
    as_email = [(Medium.EMAIL, e) for e in emails]
    as_sms = [(Medium.SMS, m) for m in mobiles]
    if channel is NotificationChannel.EMAIL:
        return as_email
    if channel is NotificationChannel.SMS:
        return as_sms
    if channel is NotificationChannel.EMAIL_PREFERRED:
        return as_email or as_sms
    if channel is NotificationChannel.SMS_PREFERRED:
        return as_sms or as_email
    return as_email + as_sms


class RecipientLookup:
    def __init__(self, registry: ContactRegistry, clock: Clock) -> None:
        self._registry = registry
        self._clock = clock

    async def resolve(
        self,
        recipients: Sequence[RecipientSpec],
        channel: NotificationChannel,
        *,
        ignore_reservation: bool = False,
        resource_id: str | None = None,
        resource_action: str | None = None,
        use_stale_contact_information: bool = False,
    ) -> LookupResult:
        person_numbers = [r.national_identity_number for r in recipients if r.national_identity_number]
        org_numbers = [r.organization_number for r in recipients if r.organization_number]
        identities = {
            r.external_identity: parse_external_identity(r.external_identity)
            for r in recipients
            if r.external_identity and not (r.national_identity_number or r.organization_number)
        }
        usernames = sorted({i.urn for i in identities.values() if i and i.kind is ExternalIdentityKind.USERNAME})
        persons = await self._registry.persons(person_numbers) if person_numbers else {}
        organizations = await self._registry.organizations(org_numbers) if org_numbers else {}
        users: dict[str, list[UserContactPoint]] = {}
        if org_numbers and resource_id:
            users = await self._registry.user_contacts(org_numbers, bare_resource_id(resource_id))
        external = await self._registry.external_identities(usernames) if usernames else {}
        action = resource_action or DEFAULT_RESOURCE_ACTION
        # Details confirmed before this count as absent; confirmed at it or later, as current.
        stale_before = None if use_stale_contact_information else months_before(self._clock.now(), STALE_AFTER_MONTHS)

        resolved: list[ResolvedRecipient] = []
        for recipient in recipients:
            if recipient.national_identity_number:
                person = persons.get(recipient.national_identity_number)
                resolved.append(_person(recipient, person, channel, ignore_reservation, stale_before))
            elif recipient.organization_number:
                organization = organizations.get(recipient.organization_number)
                points = users.get(recipient.organization_number, [])
                resolved.append(_organization(recipient, organization, points, channel, action))
            elif recipient.external_identity:
                resolved.append(
                    _external_identity(recipient, identities[recipient.external_identity], external, channel)
                )
            else:
                collector = _Collector()
                emails = [recipient.email_address] if recipient.email_address else []
                mobiles = [recipient.mobile_number] if recipient.mobile_number else []
                for medium, address in choose(channel, emails, mobiles):
                    collector.add(Address(medium, address))
                resolved.append(ResolvedRecipient(recipient, Outcome.ADDRESSED, tuple(collector.addresses)))
        return LookupResult(tuple(resolved))


def _person(
    recipient: RecipientSpec,
    person: PersonContact | None,
    channel: NotificationChannel,
    ignore_reservation: bool,
    stale_before: datetime | None,
) -> ResolvedRecipient:
    if person is None:
        return ResolvedRecipient(
            recipient,
            Outcome.MISSING_CONTACT,
            unreached=(Unreached(Reason.NOT_FOUND, "The person is not in the contact register."),),
        )
    if person.is_reserved and not ignore_reservation:
        return ResolvedRecipient(
            recipient,
            Outcome.RESERVED,
            name=person.name,
            unreached=(Unreached(Reason.RESERVED, "The person has reserved themselves against digital contact."),),
        )
    collector = _Collector()
    stale = (
        stale_before is not None and person.contact_confirmed is not None and person.contact_confirmed < stale_before
    )
    if stale:
        collector.unreached.append(
            Unreached(Reason.NO_CONTACT, f"The person last confirmed their contact details more than "
                      f"{STALE_AFTER_MONTHS} months ago, and the order does not allow stale contact information.")
        )  # fmt: skip
    else:
        emails, mobiles = _usable([person.email_address], [person.mobile_number], collector)
        for medium, address in choose(channel, emails, mobiles):
            collector.add(Address(medium, address))
        if not collector.addresses:
            collector.unreached.append(
                Unreached(Reason.NO_CONTACT, f"The person has no contact details for the channel {channel.value}.")
            )
    outcome = Outcome.FOUND if collector.addresses else Outcome.MISSING_CONTACT
    return ResolvedRecipient(
        recipient, outcome, tuple(collector.addresses), person.name, None, tuple(collector.unreached)
    )


def _organization(
    recipient: RecipientSpec,
    organization: OrganizationContact | None,
    users: list[UserContactPoint],
    channel: NotificationChannel,
    action: str,
) -> ResolvedRecipient:
    number = recipient.organization_number
    collector = _Collector()
    name = None
    if organization is None:
        collector.unreached.append(Unreached(Reason.NOT_FOUND, "The organisation is not in the register."))
    else:
        name = organization.name
        emails, mobiles = _usable(organization.email_addresses, organization.mobile_numbers, collector)
        for medium, address in choose(channel, emails, mobiles):
            collector.add(Address(medium, address))
    # Users' own contact points come after the official addresses, so that a user's copy of an official address
    # is the one dropped as a duplicate.
    for user in users:
        if action not in user.actions:
            collector.unreached.append(
                Unreached(Reason.NOT_AUTHORISED, f"The user is not authorised to {action} the resource.",
                          user.email_address or user.mobile_number, user.user_id)
            )  # fmt: skip
            continue
        emails, mobiles = _usable([user.email_address], [user.mobile_number], collector, user.user_id)
        chosen = choose(channel, emails, mobiles)
        if not chosen:
            collector.unreached.append(
                Unreached(Reason.NO_CONTACT, f"The user has no contact point for the channel {channel.value}.",
                          None, user.user_id)
            )  # fmt: skip
        for medium, address in chosen:
            collector.add(Address(medium, address, user.user_id))
    if organization is not None and not collector.addresses:
        collector.unreached.append(
            Unreached(Reason.NO_CONTACT, f"The organisation has no contact details for the channel {channel.value}.")
        )
    outcome = Outcome.FOUND if collector.addresses else Outcome.MISSING_CONTACT
    return ResolvedRecipient(recipient, outcome, tuple(collector.addresses), name, number, tuple(collector.unreached))


def _external_identity(
    recipient: RecipientSpec,
    identity: ExternalIdentity | None,
    registry: dict[str, ExternalIdentityContact],
    channel: NotificationChannel,
) -> ResolvedRecipient:
    """A self-identified user by the registry's details; an ID-porten email identity by its own address."""
    collector = _Collector()
    name = None
    if identity is None:
        # Refused at intake; an order stored otherwise (by hand, or by an older rule) reaches nobody.
        collector.unreached.append(Unreached(Reason.NOT_FOUND, "The external identity is not an accepted URN."))
    elif identity.kind is ExternalIdentityKind.IDPORTEN_EMAIL:
        for medium, address in choose(channel, [identity.value], []):
            collector.add(Address(medium, address))
        if not collector.addresses:
            collector.unreached.append(
                Unreached(Reason.NO_CONTACT, f"An ID-porten email identity has only its email address, which the "
                          f"channel {channel.value} does not use.")
            )  # fmt: skip
    else:
        user = registry.get(identity.urn)
        if user is None:
            collector.unreached.append(Unreached(Reason.NOT_FOUND, "The user is not in the register."))
        else:
            name = user.name
            emails, mobiles = _usable([user.email_address], [user.mobile_number], collector)
            for medium, address in choose(channel, emails, mobiles):
                collector.add(Address(medium, address))
            if not collector.addresses:
                collector.unreached.append(
                    Unreached(Reason.NO_CONTACT, f"The user has no contact details for the channel {channel.value}.")
                )
    outcome = Outcome.FOUND if collector.addresses else Outcome.MISSING_CONTACT
    return ResolvedRecipient(recipient, outcome, tuple(collector.addresses), name, None, tuple(collector.unreached))
