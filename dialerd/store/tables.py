"""The persisted schema as SQLModel tables. ``migrations.py`` creates exactly these (a test checks)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone: we add it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _ts(nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


class Tenant(SQLModel, table=True):
    __tablename__ = "tenant"
    id: str = Field(sa_column=Column(String(40), primary_key=True))
    name: str = Field(sa_column=Column(String(200), nullable=False, unique=True))
    concurrent_max: int = Field(sa_column=Column(Integer, nullable=False))
    calls_per_minute: int = Field(sa_column=Column(Integer, nullable=False))
    created_at: datetime | None = _ts(nullable=False)
    # Migration 0007 (issue 11): the rule limits; 0 = no limit, timezone "" = UTC (domain/caps.py).
    daily_calls_max: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    daily_minutes_max: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    max_attempts_per_number: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    frequency_window_hours: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    timezone: str = Field(default="", sa_column=Column(String(64), nullable=False, server_default=""))
    # Migration 0013: the global pacing of several daemons (GCRA: when its next call may start at the
    # earliest), written under the tenant's row lock by each claim on PostgreSQL.
    pace_at: datetime | None = _ts()


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_key"
    id: str = Field(sa_column=Column(String(40), primary_key=True))  # public key id, part of the key
    tenant_id: str = Field(
        sa_column=Column(String(40), ForeignKey("tenant.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    secret_hash: str = Field(sa_column=Column(String(128), nullable=False))  # sha256 of the whole key
    label: str = Field(default="", sa_column=Column(String(200), nullable=False))
    created_at: datetime | None = _ts(nullable=False)
    revoked_at: datetime | None = _ts()
    last_used_at: datetime | None = _ts()  # migration 0004; updated at most once a minute per key


class Campaign(SQLModel, table=True):
    __tablename__ = "campaign"
    id: str = Field(sa_column=Column(String(40), primary_key=True))
    tenant_id: str = Field(
        sa_column=Column(String(40), ForeignKey("tenant.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    name: str = Field(sa_column=Column(String(200), nullable=False))
    status: str = Field(sa_column=Column(String(20), nullable=False, index=True))
    caller_id: str = Field(sa_column=Column(String(1000), nullable=False))  # a pool, ','-separated (0010)
    destination: str = Field(sa_column=Column(String(200), nullable=False))
    default_region: str = Field(sa_column=Column(String(2), nullable=False))
    max_concurrent_calls: int = Field(sa_column=Column(Integer, nullable=False))
    retries_per_contact: int = Field(sa_column=Column(Integer, nullable=False))
    retry_delay_seconds: int = Field(sa_column=Column(Integer, nullable=False))
    ring_timeout_seconds: int = Field(sa_column=Column(Integer, nullable=False))
    import_report: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_by: str = Field(sa_column=Column(String(40), nullable=False))
    scheduled_at: datetime | None = _ts()
    created_at: datetime | None = _ts(nullable=False)
    started_at: datetime | None = _ts()
    completed_at: datetime | None = _ts()
    updated_at: datetime | None = _ts(nullable=False)
    # migration 0003: a scheduled start the tenant's cap holds back ({"reason", "since", "detail"}), or None
    start_deferred: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # migration 0006: outcome rules for retries in their canonical text (domain/retry_rules.py), '' = none
    retry_rules: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    # migration 0008: the calling hours (canonical text, '' = any time) and the fallback zone (IANA, or None)
    calling_hours: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    timezone: str | None = Field(default=None, sa_column=Column(String(64)))
    # migration 0010: how each call's caller id is taken from the caller_id pool (domain/caller_id.py)
    caller_id_strategy: str = Field(default="round_robin",
                                    sa_column=Column(String(20), nullable=False, server_default="round_robin"))
    # migration 0011: answering-machine detection ('off' or 'on') and what a machine gets (domain/amd.py)
    amd: str = Field(default="off", sa_column=Column(String(8), nullable=False, server_default="off"))
    on_machine: str = Field(default="hangup", sa_column=Column(String(140), nullable=False,
                                                               server_default="hangup"))
    # migration 0012: where the campaign's events are POSTed (domain/webhooks.py), and the key that signs them
    # (write-only: never rendered, never logged); both None without a webhook
    webhook_url: str | None = Field(default=None, sa_column=Column(String(2000)))
    webhook_secret: str | None = Field(default=None, sa_column=Column(String(200)))


class Contact(SQLModel, table=True):
    __tablename__ = "contact"
    __table_args__ = (
        UniqueConstraint("campaign_id", "phone_e164", name="uq_contact_campaign_number"),
        Index("ix_contact_campaign_status", "campaign_id", "status", "id"),
        Index("ix_contact_campaign_next", "campaign_id", "status", "next_attempt_at"),
        Index("ix_contact_campaign_id", "campaign_id", "id"),  # migration 0002
        Index("ix_contact_phone_e164", "phone_e164"),  # migration 0008: the frequency cap's count
    )
    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    )
    campaign_id: str = Field(
        sa_column=Column(String(40), ForeignKey("campaign.id", ondelete="CASCADE"), nullable=False)
    )
    line: int = Field(sa_column=Column(Integer, nullable=False))
    phone_e164: str = Field(sa_column=Column(String(20), nullable=False))
    raw_number: str = Field(sa_column=Column(String(100), nullable=False))
    fields: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(sa_column=Column(String(20), nullable=False))
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    last_attempt_at: datetime | None = _ts()
    next_attempt_at: datetime | None = _ts()
    failure_reason: str | None = Field(default=None, sa_column=Column(String(40)))
    hangup_cause: int | None = Field(default=None, sa_column=Column(Integer))
    sip_code: int | None = Field(default=None, sa_column=Column(Integer))
    updated_at: datetime | None = _ts()
    # migration 0005: why a skipped contact was not dialled ("suppressed"); None otherwise
    reason: str | None = Field(default=None, sa_column=Column(String(40)))
    # migration 0008: the zones its calling hours are read in (domain/zones.zones_text) and where they came
    # from; while pending and held back, why (a per-contact BlockReason) and from when it may be claimed.
    timezone: str | None = Field(default=None, sa_column=Column(Text))
    timezone_source: str | None = Field(default=None, sa_column=Column(String(10)))
    next_eligible_at: datetime | None = _ts()
    blocked_reason: str | None = Field(default=None, sa_column=Column(String(40)))
    # migration 0011: the last answered attempt's answered_by (human, machine, unknown) and raw AMDCAUSE
    answered_by: str | None = Field(default=None, sa_column=Column(String(10)))
    amd_cause: str | None = Field(default=None, sa_column=Column(String(80)))


class Attempt(SQLModel, table=True):
    """One origination of one contact. Written (and committed) before the originate request leaves."""

    __tablename__ = "attempt"
    __table_args__ = (Index("ix_attempt_campaign_created", "campaign_id", "created_at"),)  # migration 0009
    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    )
    contact_id: int = Field(
        sa_column=Column(
            BigInteger().with_variant(Integer, "sqlite"),
            ForeignKey("contact.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        )
    )
    campaign_id: str = Field(
        sa_column=Column(String(40), ForeignKey("campaign.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    number: int = Field(sa_column=Column(Integer, nullable=False))  # 1 for the first attempt
    channel_id: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    state: str = Field(sa_column=Column(String(20), nullable=False, index=True))  # dialing/originated/...
    channel_name: str | None = Field(default=None, sa_column=Column(String(120)))
    created_at: datetime | None = _ts(nullable=False)
    originated_at: datetime | None = _ts()
    answered_at: datetime | None = _ts()
    ended_at: datetime | None = _ts()
    talk_seconds: float | None = Field(default=None, sa_column=Column(Float))
    cause: int | None = Field(default=None, sa_column=Column(Integer))
    sip_code: int | None = Field(default=None, sa_column=Column(Integer))
    reason: str | None = Field(default=None, sa_column=Column(String(40)))
    caller_id: str | None = Field(default=None, sa_column=Column(String(80)))  # migration 0010: the one used
    # migration 0011: who answered (human, machine, unknown; None: not answered) and the raw AMDCAUSE
    answered_by: str | None = Field(default=None, sa_column=Column(String(10)))
    amd_cause: str | None = Field(default=None, sa_column=Column(String(80)))
    # migration 0013: the daemon that placed it and that daemon's epoch then (None: before several daemons)
    node_id: str | None = Field(default=None, sa_column=Column(String(120)))
    node_epoch: int | None = Field(default=None, sa_column=Column(BigInteger))


class DialerNode(SQLModel, table=True):
    """One daemon of the cluster (migration 0013): its epoch, its PBX and its heartbeat.

    The epoch is raised each time the daemon starts; a daemon that finds its epoch moved on (another
    process started under its id, or took it over) is fenced: its claims are refused in the database."""

    __tablename__ = "dialer_node"
    id: str = Field(sa_column=Column(String(120), primary_key=True))
    epoch: int = Field(sa_column=Column(BigInteger, nullable=False))
    pbx: str = Field(sa_column=Column(String(300), nullable=False))  # the PBX it drives (a URL, no secret)
    state: str = Field(sa_column=Column(String(20), nullable=False))  # up, stopped
    held_reason: str | None = Field(default=None, sa_column=Column(String(40)))  # why it is not claiming
    calls_in_flight: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    started_at: datetime | None = _ts(nullable=False)
    heartbeat_at: datetime | None = _ts(nullable=False)
    # migration 0015: the Asterisk global its PBX checks each originate's epoch against (None: no fence)
    fence_key: str | None = Field(default=None, sa_column=Column(String(64)))


class Event(SQLModel, table=True):
    """Every contact transition, in order: the SSE stream replays from here."""

    __tablename__ = "event"
    __table_args__ = (Index("ix_event_campaign_id", "campaign_id", "id"),)
    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    )
    campaign_id: str = Field(
        sa_column=Column(String(40), ForeignKey("campaign.id", ondelete="CASCADE"), nullable=False)
    )
    kind: str = Field(sa_column=Column(String(40), nullable=False))
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime | None = _ts(nullable=False)


class IdempotencyKey(SQLModel, table=True):
    """An ``Idempotency-Key`` of a tenant: the request it was first used with and, once done, its answer."""

    __tablename__ = "idempotency_key"
    __table_args__ = (Index("ix_idempotency_key_created_at", "created_at"),)  # migration 0003
    tenant_id: str = Field(
        sa_column=Column(String(40), ForeignKey("tenant.id", ondelete="CASCADE"), primary_key=True)
    )
    idem_key: str = Field(sa_column=Column(String(255), primary_key=True))
    request_hash: str = Field(sa_column=Column(String(64), nullable=False))  # sha256 hex of the request
    owner: str = Field(sa_column=Column(String(40), nullable=False))  # the daemon process that ran it
    state: str = Field(sa_column=Column(String(20), nullable=False))  # in_progress | done
    response_status: int | None = Field(default=None, sa_column=Column(Integer))
    response_body: str | None = Field(default=None, sa_column=Column(Text))
    campaign_id: str | None = Field(default=None, sa_column=Column(String(40)))
    created_at: datetime | None = _ts(nullable=False)


class ImportProblem(SQLModel, table=True):
    """One rejected row of a campaign's import (migration 0003)."""

    __tablename__ = "import_problem"
    __table_args__ = (Index("ix_import_problem_campaign_id", "campaign_id", "id"),)
    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    )
    campaign_id: str = Field(
        sa_column=Column(String(40), ForeignKey("campaign.id", ondelete="CASCADE"), nullable=False)
    )
    line: int = Field(sa_column=Column(Integer, nullable=False))
    value: str = Field(sa_column=Column(String(100), nullable=False))
    reason: str = Field(sa_column=Column(Text, nullable=False))
    code: str = Field(sa_column=Column(String(40), nullable=False))


class Suppression(SQLModel, table=True):
    """A number of a tenant's suppression list (do-not-call), migration 0005: never dialled for that tenant."""

    __tablename__ = "suppression"
    tenant_id: str = Field(
        sa_column=Column(String(40), ForeignKey("tenant.id", ondelete="CASCADE"), primary_key=True)
    )
    number: str = Field(sa_column=Column(String(20), primary_key=True))  # E.164
    reason: str = Field(default="", sa_column=Column(Text, nullable=False))
    source: str = Field(sa_column=Column(String(20), nullable=False))  # api | import | opt_out
    created_at: datetime | None = _ts(nullable=False)


class WebhookDelivery(SQLModel, table=True):
    """How far a campaign's webhook got through its events (migration 0012): the outbox is the event table,
    written in the same transaction as every state change; this row is the consumer's cursor and the state
    of the event at its head (the first one not delivered yet)."""

    __tablename__ = "webhook_delivery"
    campaign_id: str = Field(
        sa_column=Column(String(40), ForeignKey("campaign.id", ondelete="CASCADE"), primary_key=True)
    )
    delivered_through: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))
    dead: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    head_failures: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    head_failed_since: datetime | None = _ts()  # when the head event first failed (its 24 h start here)
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    last_attempt_at: datetime | None = _ts()
    next_attempt_at: datetime | None = _ts()
    # migration 0014 (issue 13): the daemon that delivers this campaign's events, and the end of its lease
    # (renewed while it delivers); both None when no daemon holds it
    lease_owner: str | None = Field(default=None, sa_column=Column(String(200)))
    lease_until: datetime | None = _ts()


class WebhookDeadEvent(SQLModel, table=True):
    """An event its campaign's webhook gave up on after failing for the whole retry period (migration 0012)."""

    __tablename__ = "webhook_dead_event"
    campaign_id: str = Field(
        sa_column=Column(String(40), ForeignKey("campaign.id", ondelete="CASCADE"), primary_key=True)
    )
    event_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    failures: int = Field(sa_column=Column(Integer, nullable=False))
    last_error: str = Field(sa_column=Column(Text, nullable=False))
    died_at: datetime | None = _ts(nullable=False)


class SchemaVersion(SQLModel, table=True):
    __tablename__ = "schema_version"
    version: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    applied_at: datetime | None = _ts(nullable=False)
