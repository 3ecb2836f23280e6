"""Answering-machine detection (issue 12): the campaign's settings, the dialplan's variables, the verdict.

Pure. With ``amd`` on, a call is originated into the dialer-side context ``[dialerd-amd]``
(``asterisk/conf/extensions_dialerd.conf``), which runs Asterisk's ``AMD()`` once the far end answers and
leaves ``AMDSTATUS`` (``HUMAN``, ``MACHINE``, ``NOTSURE``, ``HANGUP``) and ``AMDCAUSE`` on the channel.
The context itself does what ``on_machine`` says with a machine (``DIALERD_AMD_ON_MACHINE``): hang up,
or wait for the greeting to end and play a sound (``DIALERD_AMD_SOUND``) and hang up; anything else goes
on to the campaign's destination (``DIALERD_AMD_APP`` for the ARI adapter's own app, which then routes the
call as usual; ``DIALERD_AMD_NEXT`` for a dialplan destination over AMI). The adapters carry the two
variables on the call's events; :func:`answered_by` and :func:`machine_fails` map them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

# Channel variables: AMD()'s own (listed in ari.conf/manager.conf channelvars) and [dialerd-amd]'s inputs.
AMD_STATUS_VARIABLE = "AMDSTATUS"
AMD_CAUSE_VARIABLE = "AMDCAUSE"
AMD_CONTEXT = "dialerd-amd"
ON_MACHINE_VARIABLE = "DIALERD_AMD_ON_MACHINE"
SOUND_VARIABLE = "DIALERD_AMD_SOUND"
APP_VARIABLE = "DIALERD_AMD_APP"
NEXT_VARIABLE = "DIALERD_AMD_NEXT"
# The dialplan's UserEvent after AMD() (AMI "UserEvent: DialerdAmd", headers Status and Cause).
USER_EVENT = "DialerdAmd"

SOUND_MAX = 120
_SOUND = re.compile(r"[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*")


class AnsweredBy(StrEnum):
    HUMAN = "human"
    MACHINE = "machine"
    UNKNOWN = "unknown"  # AMD was unsure (NOTSURE, HANGUP) or did not run (amd off)


class AmdMode(StrEnum):
    OFF = "off"
    ON = "on"


class MachineAction(StrEnum):
    HANGUP = "hangup"  # fail the attempt with reason machine (retryable)
    VOICEMAIL = "voicemail"  # wait for the greeting to end, play the sound, hang up: completed
    CONNECT = "connect"  # route to the destination like a person: completed


@dataclass(frozen=True)
class OnMachine:
    """What to do when AMD says a machine answered. Text form: ``hangup``, ``voicemail:SOUND``, ``connect``."""

    action: MachineAction = MachineAction.HANGUP
    sound: str = ""  # voicemail only: an Asterisk sound name such as ``beep`` or ``custom/leave-message``

    @classmethod
    def parse(cls, text: str) -> OnMachine:
        """Read the text form (empty: hangup); raise ValueError saying what is wrong."""
        text = text.strip()
        if not text:
            return cls()
        head, sep, sound = text.partition(":")
        try:
            action = MachineAction(head.strip().lower())
        except ValueError:
            raise ValueError("must be hangup, voicemail:SOUND or connect") from None
        if action is not MachineAction.VOICEMAIL:
            if sep:
                raise ValueError(f"{action} takes no argument")
            return cls(action)
        if not sep:
            raise ValueError("voicemail needs a sound: voicemail:SOUND, e.g. voicemail:beep")
        return cls(action, check_sound(sound.strip()))

    def __str__(self) -> str:
        return f"{self.action}:{self.sound}" if self.action is MachineAction.VOICEMAIL else str(self.action)


def check_sound(sound: str) -> str:
    """An Asterisk sound name safe to hand to ``Playback()``: letters, digits, ``-``, ``_``, ``/`` between
    parts (no ``..``, no leading or trailing ``/``, no ``&`` or ``,``); raise ValueError otherwise."""
    if not sound:
        raise ValueError("voicemail needs a sound: voicemail:SOUND, e.g. voicemail:beep")
    if len(sound) > SOUND_MAX or ".." in sound or not _SOUND.fullmatch(sound):
        raise ValueError(f"sound must be an Asterisk sound name of letters, digits, -, _ and / (at most "
                         f"{SOUND_MAX}), got {sound[:40]!r}")
    return sound


def parse_mode(text: str) -> AmdMode:
    """``off`` (empty) or ``on``, any case; raise ValueError otherwise."""
    try:
        return AmdMode(text.strip().lower() or "off")
    except ValueError:
        raise ValueError("must be off or on") from None


@dataclass(frozen=True)
class AmdPlan:
    """An attempt with AMD on: what the dialplan does with a machine (see :func:`dialplan_variables`)."""

    on_machine: OnMachine = OnMachine()

    @property
    def handled_in_dialplan(self) -> bool:
        """A machine is hung up on (or left a message) by ``[dialerd-amd]``: it never reaches the destination."""
        return self.on_machine.action is not MachineAction.CONNECT

    def connects(self, status: str | None) -> bool:
        """Whether a call with this AMDSTATUS goes on to the destination (then it is ``connected``)."""
        return not (answered_by(status) is AnsweredBy.MACHINE and self.handled_in_dialplan)


def dialplan_variables(plan: AmdPlan) -> dict[str, str]:
    """The channel variables telling ``[dialerd-amd]`` what to do with a machine (the adapters add the exit)."""
    variables = {ON_MACHINE_VARIABLE: str(plan.on_machine.action)}
    if plan.on_machine.sound:
        variables[SOUND_VARIABLE] = plan.on_machine.sound
    return variables


def answered_by(status: str | None) -> AnsweredBy:
    """AMDSTATUS -> who answered: HUMAN, MACHINE; anything else (NOTSURE, HANGUP, unset) is unknown."""
    text = (status or "").strip().upper()
    if text == "HUMAN":
        return AnsweredBy.HUMAN
    if text == "MACHINE":
        return AnsweredBy.MACHINE
    return AnsweredBy.UNKNOWN


def machine_fails(status: str | None, on_machine: OnMachine | None) -> bool:
    """Whether an answered call fails with reason ``machine``: AMD said MACHINE and ``on_machine`` is hangup.

    ``on_machine`` None: AMD was off for the campaign, so a stray AMDSTATUS decides nothing.
    """
    return (on_machine is not None and on_machine.action is MachineAction.HANGUP
            and answered_by(status) is AnsweredBy.MACHINE)


def amd_cause(cause: str | None) -> str | None:
    """AMDCAUSE as stored: Asterisk's raw text (e.g. ``LONGGREETING-1500-1500``), None when empty."""
    text = (cause or "").strip()
    return text[:80] or None
