"""load_settings: the layers, the errors that name the key, and config/dialerd.toml documenting every key."""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from dialerd.errors import ConfigError
from dialerd.settings import OTHER_ENV, SECRET_KEYS, Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config" / "dialerd.toml"
OPERATIONS = REPO / "docs" / "operations.md"
LOCAL_PBX = REPO / "asterisk" / "local-pbx"
# Asterisk channel variables dialerd sets on its calls (and the dialplan reads): never in the environment.
CHANNEL_VARIABLES = frozenset({
    "DIALERD_ID", "DIALERD_CAMPAIGN", "DIALERD_CONTACT", "DIALERD_ATTEMPT", "DIALERD_NUMBER", "DIALERD_DEST",
    "DIALERD_ANSWERED", "DIALERD_RES", "DIALERD_OPT_OUT",
    # [dialerd-amd]'s exits and AMD() parameters (asterisk/conf/extensions_dialerd.conf)
    "DIALERD_AMD_APP", "DIALERD_AMD_NEXT", "DIALERD_AMD_INITIAL_SILENCE", "DIALERD_AMD_GREETING",
    "DIALERD_AMD_AFTER_GREETING_SILENCE", "DIALERD_AMD_TOTAL_ANALYSIS_TIME", "DIALERD_AMD_MIN_WORD_LENGTH",
    "DIALERD_AMD_BETWEEN_WORDS_SILENCE", "DIALERD_AMD_MAX_WORDS", "DIALERD_AMD_SILENCE_THRESHOLD",
    "DIALERD_AMD_MAX_WORD_LENGTH", "DIALERD_AMD_ON_MACHINE", "DIALERD_AMD_SOUND", "DIALERD_AMD_VM_SILENCE",
    "DIALERD_AMD_VM_TIMEOUT",
    # [dialerd-fence] and what it leaves on the channel (docs/fencing.md); DIALERD_TECH: [dialerd-hh]'s
    "DIALERD_FENCE_KEY", "DIALERD_EPOCH", "DIALERD_DIAL", "DIALERD_FENCED", "DIALERD_LEG_TECH", "DIALERD_TECH",
    # [dialerd-hh]'s loop over the records an originate carries for deletion (pbx/ari.py forget)
    "DIALERD_FORGET", "DIALERD_F", "DIALERD_I", "DIALERD_GONE",
})
# DIALERD_FENCE_<key>: the fence globals (dialerd/pbx/fence.py)
CHANNEL_VARIABLE_PREFIXES = ("DIALERD_FIELD_", "DIALERD_RES_", "DIALERD_FENCE_")
TEST_EXAMPLES = frozenset({"DIALERD_NO_SUCH_THING", "DIALERD_SERVER_PROT", "DIALERD_FOO", "DIALERD_DATABSE_URL"})
SECTIONS = ("server", "database", "pbx", "ari", "ami", "dialer", "compliance", "sse", "webhooks", "cluster", "shutdown", "log")
# In config/dialerd.toml every non-secret key is documented as a commented-out line `# key = <default>`
# (a TOML value), directly under at least one line of prose comment, inside its `[section]`.
KEY_LINE = re.compile(r"^# ([a-z][a-z0-9_]*) = (.+)$")
SECTION_LINE = re.compile(r"^\[([a-z]+)\]$")


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dialerd.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _config_error(*args: Any, **kwargs: Any) -> ConfigError:
    kwargs.setdefault("env", {})
    with pytest.raises(ConfigError) as info:
        load_settings(*args, **kwargs)
    return info.value


def _split(name: str) -> tuple[str, str]:
    section, _, key = name.partition("_")
    return section, key


def _names_key(message: str, name: str) -> bool:
    """Whether an error message names the setting, as `section_key` or as `section.key`."""
    section, key = _split(name)
    return name in message or f"{section}.{key}" in message


# ---- layers --------------------------------------------------------------------------------------


def test_defaults_without_file_env_or_flags() -> None:
    settings = load_settings(None, env={})
    assert settings == Settings()
    assert (settings.server_host, settings.server_port) == ("127.0.0.1", 8080)
    assert settings.database_url == "sqlite+aiosqlite:///dialerd.db"
    assert (settings.ari_password, settings.ami_secret) == ("", "")


def test_settings_fields_follow_the_section_naming() -> None:
    assert {_split(f.name)[0] for f in dataclasses.fields(Settings)} == set(SECTIONS)


def test_file_overrides_defaults(tmp_path: Path) -> None:
    path = _toml(tmp_path, '[server]\nport = 9000\nmax_upload_mb = 2\n[log]\nlevel = "debug"\n')
    settings = load_settings(path, env={})
    assert settings.server_port == 9000
    assert settings.server_max_upload_mb == 2.0
    assert isinstance(settings.server_max_upload_mb, float)
    assert settings.log_level == "debug"
    assert settings.server_host == Settings().server_host


def test_env_overrides_file(tmp_path: Path) -> None:
    path = _toml(tmp_path, '[server]\nport = 9000\nhost = "0.0.0.0"\n')
    env = {"DIALERD_SERVER_PORT": "9100", "DIALERD_SSE_SNAPSHOT_INTERVAL": "0.5"}
    settings = load_settings(path, env=env)
    assert settings.server_port == 9100
    assert settings.sse_snapshot_interval == 0.5
    assert settings.server_host == "0.0.0.0"


def test_flags_override_env(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[server]\nport = 9000\n")
    env = {"DIALERD_SERVER_PORT": "9100", "DIALERD_DATABASE_URL": "sqlite+aiosqlite:///env.db"}
    settings = load_settings(path, env=env, overrides={"server_port": 9200, "database_url": None})
    assert settings.server_port == 9200
    assert settings.database_url == "sqlite+aiosqlite:///env.db", "a flag left unset (None) must not override"


def test_unrelated_environment_is_ignored() -> None:
    settings = load_settings(None, env={"SERVER_PORT": "1", "PATH": "/bin", "dialerd_server_port": "1"})
    assert settings == Settings()


@pytest.mark.parametrize("var", ["DIALERD_NO_SUCH_THING", "DIALERD_SERVER_PROT", "DIALERD_FOO", "DIALERD_"])
def test_unknown_dialerd_variable_is_refused_naming_it(var: str) -> None:
    error = _config_error(None, env={var: "1", "DIALERD_SERVER_PORT": "9000"})
    assert var in error.message
    assert error.details["key"] == var


def test_unknown_variable_gets_a_suggestion() -> None:
    error = _config_error(None, env={"DIALERD_SERVER_PROT": "9000"})
    assert "did you mean DIALERD_SERVER_PORT?" in error.message


def test_an_unknown_variable_is_refused_even_when_empty() -> None:
    error = _config_error(None, env={"DIALERD_DATABSE_URL": ""})
    assert "DIALERD_DATABSE_URL" in error.message


def test_the_other_dialerd_variables_are_allowed_and_change_nothing() -> None:
    env = dict.fromkeys(OTHER_ENV, "1")
    assert load_settings(None, env=env) == Settings()


def test_the_local_pbx_exports_are_accepted_as_they_are(tmp_path: Path) -> None:
    """`eval "$(asterisk/local-pbx up)"` then `dialerd serve`: every name it prints is known."""
    source = LOCAL_PBX.read_text(encoding="utf-8")
    printed = set(re.findall(r'\("(DIALERD_[A-Z0-9_]+)",', source))
    assert "DIALERD_ARI_URL" in printed and "DIALERD_PBX_ROOT" in printed
    env = dict.fromkeys(printed, "1")
    env.update({"DIALERD_ARI_URL": "http://127.0.0.1:1", "DIALERD_PBX_ENDPOINT": "PJSIP/{number}@carrier"})
    load_settings(None, env=env)  # raises on an unknown name


def test_every_dialerd_name_in_the_tree_is_a_setting_or_declared() -> None:
    """A new DIALERD_* environment variable anywhere (code, tests, local PBX, unit) must be declared in
    OTHER_ENV, or dialerd refuses to start where it is set. Asterisk channel variables are listed here."""
    settings_env = {f"DIALERD_{f.name.upper()}" for f in dataclasses.fields(Settings)}
    found: dict[str, str] = {}
    for path in sorted(REPO.rglob("*")):
        rel = path.relative_to(REPO)
        if not path.is_file() or rel.parts[0] in {".git", ".venv"} or "__pycache__" in rel.parts:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for name in re.findall(r"DIALERD_[A-Z0-9_]*[A-Z0-9]\b", text):
            found.setdefault(name, str(rel))
    unknown = {
        name: where for name, where in found.items()
        if name not in settings_env and name not in OTHER_ENV and name not in CHANNEL_VARIABLES
        and not name.startswith(CHANNEL_VARIABLE_PREFIXES) and name not in TEST_EXAMPLES
    }
    assert unknown == {}, "declare these in dialerd.settings.OTHER_ENV (and docs/operations.md) or rename them"


def test_the_other_variables_are_documented() -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    missing = [var for var in OTHER_ENV if f"`{var}`" not in text]
    assert missing == [], "docs/operations.md must list every allowed non-setting DIALERD_* variable"


def test_secrets_come_from_the_environment() -> None:
    settings = load_settings(None, env={"DIALERD_ARI_PASSWORD": "s3cret", "DIALERD_AMI_SECRET": "t0ps3cret"})
    assert (settings.ari_password, settings.ami_secret) == ("s3cret", "t0ps3cret")


# ---- errors name the key -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("var", "value"),
    [("DIALERD_SERVER_PORT", "abc"), ("DIALERD_DIALER_RING_TIMEOUT", "12.5"), ("DIALERD_SSE_QUEUE_SIZE", "")],
)
def test_bad_int_in_env_names_the_variable(var: str, value: str) -> None:
    error = _config_error(None, env={var: value})
    assert var in error.message
    assert repr(value) in error.message


def test_bad_float_in_env_names_the_variable() -> None:
    error = _config_error(None, env={"DIALERD_SHUTDOWN_GRACE_PERIOD": "a minute"})
    assert "DIALERD_SHUTDOWN_GRACE_PERIOD" in error.message


def test_unknown_section_is_named(tmp_path: Path) -> None:
    error = _config_error(_toml(tmp_path, "[sever]\nport = 1\n"))
    assert "sever" in error.message


def test_unknown_key_is_named(tmp_path: Path) -> None:
    error = _config_error(_toml(tmp_path, "[server]\nprot = 8081\n"))
    assert "server.prot" in error.message


def test_top_level_key_outside_a_section_is_refused(tmp_path: Path) -> None:
    error = _config_error(_toml(tmp_path, "port = 8081\n"))
    assert "port" in error.message


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ('[server]\nport = "eighty"\n', "server.port"),
        ("[server]\nport = true\n", "server.port"),
        ("[server]\nport = 80.5\n", "server.port"),
        ("[database]\nurl = 5\n", "database.url"),
        ('[sse]\nsnapshot_interval = "fast"\n', "sse.snapshot_interval"),
    ],
)
def test_wrong_type_in_file_is_named(tmp_path: Path, text: str, name: str) -> None:
    error = _config_error(_toml(tmp_path, text))
    assert name in error.message


@pytest.mark.parametrize(("section", "key"), [("ari", "password"), ("ami", "secret")])
def test_secret_in_file_is_refused(tmp_path: Path, section: str, key: str) -> None:
    error = _config_error(_toml(tmp_path, f'[{section}]\n{key} = "hunter2"\n'))
    assert f"{section}.{key}" in error.message
    assert f"DIALERD_{section.upper()}_{key.upper()}" in error.message, "say where the secret belongs"
    assert "hunter2" not in error.message


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("[server]\nport = 70000\n", "server_port"),
        ("[server]\nport = -1\n", "server_port"),
        ("[dialer]\nring_timeout = 1\n", "dialer_ring_timeout"),
        ("[dialer]\nring_timeout = 301\n", "dialer_ring_timeout"),
        ("[ami]\nport = 0\n", "ami_port"),
        ("[sse]\nqueue_size = 9\n", "sse_queue_size"),
        ("[shutdown]\ngrace_period = -1\n", "shutdown_grace_period"),
        ('[log]\nlevel = "loud"\n', "log_level"),
        ('[pbx]\ndriver = "sip"\n', "pbx_driver"),
        ('[pbx]\nendpoint = "PJSIP/carrier"\n', "pbx_endpoint"),
    ],
)
def test_out_of_range_in_file_is_named(tmp_path: Path, text: str, name: str) -> None:
    error = _config_error(_toml(tmp_path, text))
    assert _names_key(error.message, name), error.message


def test_out_of_range_in_env_is_named() -> None:
    error = _config_error(None, env={"DIALERD_SERVER_PORT": "70000"})
    assert _names_key(error.message, "server_port"), error.message


@pytest.mark.parametrize("var", ["DIALERD_SSE_SNAPSHOT_INTERVAL", "DIALERD_SERVER_MAX_UPLOAD_MB"])
def test_nan_is_not_a_valid_number(var: str) -> None:
    # NaN compares false with every bound, so a range check written as `v < lo` lets it through.
    name = var.removeprefix("DIALERD_").lower()
    try:
        settings = load_settings(None, env={var: "nan"})
    except ConfigError as exc:
        assert _names_key(exc.message, name) or var in exc.message, exc.message
    else:
        pytest.fail(f"{var}=nan was accepted as {name}={getattr(settings, name)!r}")


def test_range_bounds_themselves_are_accepted(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[server]\nport = 65535\n[dialer]\nring_timeout = 5\n[sse]\nqueue_size = 10\n")
    settings = load_settings(path, env={})
    assert (settings.server_port, settings.dialer_ring_timeout, settings.sse_queue_size) == (65535, 5, 10)


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[server\nport = = 1\n")
    error = _config_error(path)
    assert str(path) in error.message
    assert "TOML" in error.message


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    error = _config_error(path)
    assert str(path) in error.message


# ---- redaction -----------------------------------------------------------------------------------


def test_redacted_masks_secrets_and_keeps_the_rest() -> None:
    settings = load_settings(None, env={"DIALERD_ARI_PASSWORD": "s3cret", "DIALERD_AMI_SECRET": "t0ps3cret"})
    out = settings.redacted()
    assert out["ari_password"] == "***"
    assert out["ami_secret"] == "***"
    assert "s3cret" not in json.dumps(out)
    public = {k: v for k, v in out.items() if k not in SECRET_KEYS}
    assert public == {k: v for k, v in dataclasses.asdict(settings).items() if k not in SECRET_KEYS}


def test_redacted_shows_an_unset_secret_as_empty() -> None:
    out = Settings().redacted()
    assert (out["ari_password"], out["ami_secret"]) == ("", "")


def test_secret_keys_are_the_two_pbx_secrets() -> None:
    assert {"ari_password", "ami_secret"} == SECRET_KEYS


# ---- config/dialerd.toml documents every setting -------------------------------------------------


def _documented() -> tuple[dict[str, dict[str, str]], dict[str, str], list[str]]:
    """Parse config/dialerd.toml: ({section: {key: value text}}, {section: section text}, problems)."""
    keys: dict[str, dict[str, str]] = {}
    text: dict[str, str] = {}
    problems: list[str] = []
    section: str | None = None
    previous = ""
    for number, line in enumerate(CONFIG.read_text(encoding="utf-8").splitlines(), start=1):
        if match := SECTION_LINE.match(line):
            section = match[1]
            keys.setdefault(section, {})
            text.setdefault(section, "")
        elif match := KEY_LINE.match(line):
            key, value = match[1], match[2]
            if section is None:
                problems.append(f"line {number}: {key} before any section")
            elif key in keys[section]:
                problems.append(f"line {number}: {section}.{key} documented twice")
            else:
                keys[section][key] = value
            if not previous.startswith("#") or KEY_LINE.match(previous):
                problems.append(f"line {number}: {key} has no explanation comment directly above it")
        elif section is not None:
            text[section] += line + "\n"
        previous = line
    return keys, text, problems


def test_config_file_loads_to_exactly_the_defaults() -> None:
    assert load_settings(CONFIG, env={}) == Settings()


def test_config_file_sets_nothing_and_lists_every_section_in_order() -> None:
    doc = tomllib.loads(CONFIG.read_text(encoding="utf-8"))
    assert doc == {section: {} for section in SECTIONS}, "keys stay commented out; sections stay present"
    assert list(doc) == list(SECTIONS)


def test_config_file_documents_every_setting_with_its_default() -> None:
    keys, _, problems = _documented()
    assert problems == []
    for f in dataclasses.fields(Settings):
        section, key = _split(f.name)
        if f.name in SECRET_KEYS:
            continue
        assert key in keys.get(section, {}), f"{section}.{key} is not documented as '# {key} = ...'"
        value = tomllib.loads(f"v = {keys[section][key]}")["v"]
        assert value == f.default, f"{section}.{key}: documented {value!r}, default {f.default!r}"
        assert type(value) is type(f.default), f"{section}.{key}: documented as {type(value).__name__}"


def test_config_file_documents_no_unknown_key() -> None:
    keys, _, _ = _documented()
    known = {_split(f.name) for f in dataclasses.fields(Settings) if f.name not in SECRET_KEYS}
    documented = {(section, key) for section, entries in keys.items() for key in entries}
    assert documented - known == set()


@pytest.mark.parametrize("name", sorted(SECRET_KEYS))
def test_config_file_tells_where_secrets_go_without_a_key_line(name: str) -> None:
    keys, text, _ = _documented()
    section, key = _split(name)
    assert key not in keys[section], f"{section}.{key} must not appear as a key line, even commented out"
    assert f"DIALERD_{name.upper()}" in text[section]
    assert "EnvironmentFile" in CONFIG.read_text(encoding="utf-8")


def test_config_file_with_every_key_uncommented_still_gives_the_defaults(tmp_path: Path) -> None:
    lines = CONFIG.read_text(encoding="utf-8").splitlines()
    uncommented = "\n".join(line[2:] if KEY_LINE.match(line) else line for line in lines)
    assert load_settings(_toml(tmp_path, uncommented), env={}) == Settings()


def test_config_file_explains_database_url_forms() -> None:
    _, text, _ = _documented()
    assert "sqlite+aiosqlite:///" in text["database"]
    assert "postgresql+asyncpg://" in text["database"]


# ---- [compliance]: checked by the same domain rules as the form fields --------------------------


def test_compliance_settings_are_read_and_checked(tmp_path: Path) -> None:
    path = _toml(tmp_path, '[compliance]\ncalling_hours = "mon-fri 09:00-20:00"\ndefault_timezone = "Europe/Berlin"\n')
    settings = load_settings(path, env={})
    assert (settings.compliance_calling_hours, settings.compliance_default_timezone) == (
        "mon-fri 09:00-20:00",
        "Europe/Berlin",
    )
    env = {"DIALERD_COMPLIANCE_CALLING_HOURS": "daily 10:00-24:00"}
    assert load_settings(None, env=env).compliance_calling_hours == "daily 10:00-24:00"


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("calling_hours", "mon-fri 20:00-09:00", "calling_hours"),
        ("calling_hours", "weekdays 09:00-17:00", "weekdays"),
        ("default_timezone", "Mars/Olympus", "Mars/Olympus"),
    ],
)
def test_bad_compliance_settings_name_the_key(tmp_path: Path, key: str, value: str, problem: str) -> None:
    path = _toml(tmp_path, f'[compliance]\n{key} = "{value}"\n')
    with pytest.raises(ConfigError) as e:
        load_settings(path, env={})
    assert e.value.details["key"] == f"compliance_{key}"
    assert problem in str(e.value) or value in str(e.value)


def test_webhooks_allow_private_reads_toml_and_environment_booleans(tmp_path: Path) -> None:
    assert Settings().webhooks_allow_private is False
    assert load_settings(_toml(tmp_path, "[webhooks]\nallow_private = true\n"), env={}).webhooks_allow_private
    for raw, want in (("true", True), ("1", True), ("yes", True), ("false", False), ("0", False)):
        env = {"DIALERD_WEBHOOKS_ALLOW_PRIVATE": raw}
        assert load_settings(env=env).webhooks_allow_private is want
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"DIALERD_WEBHOOKS_ALLOW_PRIVATE": "maybe"})
    assert "DIALERD_WEBHOOKS_ALLOW_PRIVATE" in caught.value.message and "bool" in caught.value.message
    with pytest.raises(ConfigError):
        load_settings(_toml(tmp_path, '[webhooks]\nallow_private = "yes please"\n'), env={})
