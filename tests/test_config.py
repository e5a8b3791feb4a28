"""Configuration: precedence, durations, filters, and every error a user can make (exit 2, no secret)."""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import pytest
from support.pki import make_authority, make_pki

from exporter.cli import build_parser, run_cli
from exporter.config import ENV_PREFIX, load_config_file, secrets_in, settings_from_args
from exporter.configreference import render_reference, splice
from exporter.errors import ConfigError
from exporter.settings import ProbeSettings, Secret, Settings, validate_stream_name
from exporter.settingstable import SETTINGS, field_value

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "pw-Zq8-never-print-me"
TOKEN = "tok-Xv3-never-print-me"
# Every error case below starts from this valid file, so each also proves the password stays hidden.
BASE_YAML = f"""\
nats:
  user: exporter
  password: {PASSWORD}
"""


def load(argv=(), env=None) -> Settings:
    return settings_from_args(build_parser().parse_args(list(argv)), env or {})


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def check_config_fails(capsys, argv) -> str:
    """Run check-config, assert the one-line error contract, and return the message."""
    code = run_cli(["check-config", *argv])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert out == ""
    assert err.startswith("nats-jetstream-exporter: error: "), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    for secret in (PASSWORD, TOKEN):
        assert secret not in err
    return err


# -- defaults and precedence --------------------------------------------------------------------------


def test_no_configuration_gives_the_defaults():
    assert load() == Settings()


def test_precedence_is_flags_over_environment_over_file_over_defaults(tmp_path):
    config = write(tmp_path, "collection:\n  interval: 30s\nlog:\n  level: warning\n")
    file_only = ["--config", str(config)]
    env = {f"{ENV_PREFIX}INTERVAL": "20s"}

    assert load().collection.interval_seconds == 15.0
    assert load(file_only).collection.interval_seconds == 30.0
    assert load(file_only, env).collection.interval_seconds == 20.0
    assert load([*file_only, "--interval", "10s"], env).collection.interval_seconds == 10.0
    # A key set only in the file survives the layers above it.
    assert load([*file_only, "--interval", "10s"], env).log.level == "warning"


def test_flag_lists_replace_lower_layers_and_accept_repeats_and_commas(tmp_path):
    config = write(tmp_path, "nats:\n  servers: [nats://file:4222]\ndead_letter_streams: [FILE_DLQ]\n")
    env = {f"{ENV_PREFIX}NATS_URL": "nats://env-a:4222, nats://env-b:4222"}
    argv = ["--config", str(config)]

    assert load(argv).nats.servers == ("nats://file:4222",)
    assert load(argv, env).nats.servers == ("nats://env-a:4222", "nats://env-b:4222")
    flags = [*argv, "--nats-url", "nats://a:4222,tls://b:4443", "--nats-url", "c:4222"]
    assert load(flags, env).nats.servers == ("nats://a:4222", "tls://b:4443", "nats://c:4222")
    assert load(
        [*argv, "--dead-letter-stream", "AI_DLQ", "--dead-letter-stream", "X"]
    ).dead_letter_streams == (
        "AI_DLQ",
        "X",
    )


def test_config_file_can_come_from_the_environment_and_the_flag_wins(tmp_path):
    from_env = write(tmp_path, "log:\n  format: json\n", "env.yaml")
    from_flag = write(tmp_path, "log:\n  format: text\n  level: debug\n", "flag.yaml")
    env = {f"{ENV_PREFIX}CONFIG": str(from_env)}
    assert load(env=env).log.format == "json"
    assert load(["--config", str(from_flag)], env).log == load(["--config", str(from_flag)]).log


def test_empty_and_unrelated_environment_variables_are_ignored():
    env = {
        f"{ENV_PREFIX}LOG_LEVEL": "",
        # Kubernetes injects these for a Service named nats-exporter: they must not break start-up.
        f"{ENV_PREFIX}SERVICE_HOST": "10.0.0.1",
        f"{ENV_PREFIX}PORT": "tcp://10.0.0.1:10422",
    }
    assert load(env=env) == Settings()


def test_every_key_is_read_from_the_file(tmp_path):
    (tmp_path / "seed.nk").write_text("SUAEXAMPLE\n", encoding="utf-8")
    (tmp_path / "web.yml").write_text("", encoding="utf-8")
    config = write(
        tmp_path,
        """\
        nats:
          servers: [nats://a:4222, "tls://b:4443"]
          nkey_seed_file: seed.nk
          domain: hub
          connect_timeout: 2500ms
          account: AI
        web:
          listen_address: "[::1]:19000"
          config_file: web.yml
        collection:
          interval: 1m
          deadline: 45s
          concurrency: 4
          stale_data_ttl: 10m
          lag_lookups_per_cycle: 0
        filters:
          streams: {include: "AI_.*", exclude: [".*_STREAM", "TMP"]}
          consumers: {exclude: "tmp-.*"}
        dead_letter_streams: [AI_DLQ, AI_DLQ]
        log: {level: DEBUG, format: json}
        """,
    )
    settings = load(["--config", str(config)])
    assert settings.nats.servers == ("nats://a:4222", "tls://b:4443")
    assert settings.nats.auth.nkey_seed_file == str(tmp_path / "seed.nk")  # relative to the file
    assert settings.nats.domain == "hub"
    assert settings.nats.connect_timeout_seconds == 2.5
    assert settings.nats.account == "AI"
    assert settings.web.listen_address == "[::1]:19000"
    assert settings.web.config_file == str(tmp_path / "web.yml")
    assert settings.collection.interval_seconds == 60.0
    assert settings.collection.deadline_seconds == 45.0
    assert settings.collection.concurrency == 4
    assert settings.collection.stale_data_ttl_seconds == 600.0
    assert settings.collection.lag_lookups_per_cycle == 0
    assert settings.dead_letter_streams == ("AI_DLQ",)
    assert (settings.log.level, settings.log.format) == ("debug", "json")
    assert settings.filters.consumer_include is None
    assert not settings.filters.consumer_selected("tmp-1")
    assert settings.filters.consumer_selected("chat-handler")


def test_every_environment_variable_is_read(tmp_path):
    for name in ("ca.pem", "creds", "web.yml"):
        (tmp_path / name).write_text("", encoding="utf-8")
    env = {
        f"{ENV_PREFIX}NATS_URL": "nats://n:4222",
        f"{ENV_PREFIX}NATS_TOKEN": TOKEN,
        f"{ENV_PREFIX}NATS_DOMAIN": "leaf",
        f"{ENV_PREFIX}NATS_CONNECT_TIMEOUT": "3",
        f"{ENV_PREFIX}NATS_ACCOUNT": "APP",
        f"{ENV_PREFIX}WEB_LISTEN_ADDRESS": "127.0.0.1:0",
        f"{ENV_PREFIX}WEB_CONFIG_FILE": str(tmp_path / "web.yml"),
        f"{ENV_PREFIX}INTERVAL": "30s",
        f"{ENV_PREFIX}DEADLINE": "20s",
        f"{ENV_PREFIX}CONCURRENCY": "8",
        f"{ENV_PREFIX}STALE_DATA_TTL": "0",
        f"{ENV_PREFIX}LAG_LOOKUPS_PER_CYCLE": "50",
        f"{ENV_PREFIX}REQUEST_TIMEOUT": "7s",
        # Regexes are not split on commas: {1,3} must survive.
        f"{ENV_PREFIX}STREAM_INCLUDE": "AI_[A-Z]{1,3}",
        f"{ENV_PREFIX}STREAM_EXCLUDE": "AI_X",
        f"{ENV_PREFIX}CONSUMER_INCLUDE": "chat-.*",
        f"{ENV_PREFIX}CONSUMER_EXCLUDE": "chat-tmp",
        f"{ENV_PREFIX}DEAD_LETTER_STREAMS": "AI_DLQ,OTHER_DLQ",
        f"{ENV_PREFIX}LOG_LEVEL": "error",
        f"{ENV_PREFIX}LOG_FORMAT": "json",
    }
    settings = load(env=env)
    assert settings.nats.servers == ("nats://n:4222",)
    assert settings.nats.auth.token == Secret(TOKEN)
    assert (settings.nats.domain, settings.nats.account) == ("leaf", "APP")
    assert settings.nats.connect_timeout_seconds == 3.0
    assert settings.web.listen_address == "127.0.0.1:0"
    assert settings.collection.interval_seconds == 30.0
    assert settings.collection.deadline_seconds == 20.0
    assert settings.collection.concurrency == 8
    assert settings.collection.stale_data_ttl_seconds == 0.0
    assert settings.collection.lag_lookups_per_cycle == 50
    assert settings.collection.request_timeout_seconds == 7.0
    assert settings.filters.stream_selected("AI_DLQ")
    assert not settings.filters.stream_selected("AI_X")
    assert not settings.filters.stream_selected("AI_PIPELINE")
    assert settings.filters.consumer_selected("chat-handler")
    assert not settings.filters.consumer_selected("chat-tmp")
    assert settings.dead_letter_streams == ("AI_DLQ", "OTHER_DLQ")
    assert (settings.log.level, settings.log.format) == ("error", "json")

    files = {
        f"{ENV_PREFIX}NATS_CREDENTIALS_FILE": str(tmp_path / "creds"),
        f"{ENV_PREFIX}NATS_TLS_CA_FILE": str(tmp_path / "ca.pem"),
    }
    with pytest.raises(ConfigError) as raised:  # an empty CA file is not a CA: the file is really read
        load(env=files)
    assert (raised.value.source, raised.value.key) == (
        f"env {ENV_PREFIX}NATS_TLS_CA_FILE",
        "nats.tls.ca_file",
    )
    credentials = load(env={f"{ENV_PREFIX}NATS_CREDENTIALS_FILE": str(tmp_path / "creds")})
    assert credentials.nats.auth.credentials_file == str(tmp_path / "creds")
    user = load(env={f"{ENV_PREFIX}NATS_USER": "u", f"{ENV_PREFIX}NATS_PASSWORD": PASSWORD})
    assert (user.nats.auth.user, user.nats.auth.password) == ("u", Secret(PASSWORD))
    assert secrets_in(user) == (Secret(PASSWORD),)
    assert PASSWORD not in repr(user)


def test_default_deadline_shrinks_with_a_short_interval():
    assert load(["--interval", "3s"]).collection.deadline_seconds == 2.0
    assert load(["--interval", "1m"]).collection.deadline_seconds == 10.0


# -- durations (the parser itself: test_durations.py) -------------------------------------------------


def test_durations_as_plain_numbers_in_yaml(tmp_path):
    config = write(tmp_path, "collection:\n  interval: 20\n  deadline: 7.5\n")
    collection = load(["--config", str(config)]).collection
    assert (collection.interval_seconds, collection.deadline_seconds) == (20.0, 7.5)


def test_days_are_a_duration_unit(tmp_path):
    config = write(tmp_path, "collection:\n  stale_data_ttl: 1d12h\n")
    assert load(["--config", str(config)]).collection.stale_data_ttl_seconds == 1.5 * 86400


# -- filters --------------------------------------------------------------------------------------------


def test_filters_are_full_matches_and_exclude_wins(tmp_path):
    config = write(
        tmp_path,
        """\
        filters:
          streams:
            include: ["AI_.*", COMPANIONS_CHAT]
            exclude: ".*_STREAM"
        """,
    )
    filters = load(["--config", str(config)]).filters
    assert filters.stream_selected("AI_PIPELINE")
    assert filters.stream_selected("AI_DLQ")
    assert filters.stream_selected("COMPANIONS_CHAT")
    assert not filters.stream_selected("AI_CHAT_STREAM")  # excluded
    assert not filters.stream_selected("COMPANIONS_LOGINS")  # not included
    assert not filters.stream_selected("XAI_PIPELINE")  # full match, not search
    assert filters.consumer_selected("anything")


# -- the file itself ------------------------------------------------------------------------------------


def test_load_config_file_reads_a_mapping_and_an_empty_file(tmp_path):
    assert load_config_file(write(tmp_path, "log:\n  level: info\n")) == {"log": {"level": "info"}}
    assert load_config_file(write(tmp_path, "# only a comment\n", "empty.yaml")) == {}


def test_yaml_anchors_and_merge_keys_still_work(tmp_path):
    config = write(
        tmp_path,
        """\
        filters:
          streams: &common {exclude: "TMP_.*"}
          consumers:
            <<: *common
        """,
    )
    assert not load(["--config", str(config)]).filters.consumer_selected("TMP_1")


# -- every configuration error: exit 2, one line naming the source and the key, no secret ------------------

FILE_ERRORS = [
    # (YAML appended to BASE_YAML, key named, words in the message)
    ("intervall: 15s\n", "intervall", "did you mean 'collection.interval'"),
    ("collection:\n  intervl: 15s\n", "collection.intervl", "did you mean 'interval'"),
    ("web:\n  listen: ':9'\n", "web.listen", "did you mean 'listen_address'"),
    ("bogus: 1\n", "bogus", "known keys: accounts, ack_latency, collection, dead_letter_streams"),
    ("collection: [1, 2]\n", "collection", "expected a mapping of keys, got a list"),
    ("collection:\n  concurrency: many\n", "collection.concurrency", "expected a whole number, got a string"),
    ("collection:\n  concurrency: 2.5\n", "collection.concurrency", "expected a whole number, got a number"),
    ("collection:\n  concurrency: '8'\n", "collection.concurrency", "expected a whole number"),
    ("collection:\n  concurrency: 0\n", "collection.concurrency", "must be greater than zero"),
    ("collection:\n  request_timeout: 0s\n", "collection.request_timeout", "must be greater than zero"),
    (
        "collection:\n  lag_lookups_per_cycle: -1\n",
        "collection.lag_lookups_per_cycle",
        "must not be negative",
    ),
    ("collection:\n  interval: 15x\n", "collection.interval", "invalid duration '15x'"),
    ("collection:\n  interval: true\n", "collection.interval", "got true/false"),
    ("collection:\n  interval: 0s\n", "collection.interval", "must be greater than zero"),
    ("collection:\n  interval: .inf\n", "collection.interval", "finite"),
    ("collection:\n  stale_data_ttl: -5m\n", "collection.stale_data_ttl", "must not be negative"),
    ("nats:\n  connect_timeout: -1s\n", "nats.connect_timeout", "must be greater than zero"),
    ("collection:\n  interval: 10s\n  deadline: 10s\n", "collection.deadline", "must be shorter than"),
    ("dead_letter_streams: {a: 1}\n", "dead_letter_streams", "expected a list of strings, got a mapping"),
    ("dead_letter_streams: [AI_DLQ, 3]\n", "dead_letter_streams", "found a number in it"),
    ("dead_letter_streams: [AI.DLQ]\n", "dead_letter_streams", "invalid stream name 'AI.DLQ'"),
    (
        "filters:\n  streams:\n    include: 'AI_('\n",
        "filters.streams.include",
        "invalid regular expression 'AI_('",
    ),
    (
        "filters:\n  consumers:\n    exclude: ['ok', '[']\n",
        "filters.consumers.exclude",
        "invalid regular expression",
    ),
    ("filters:\n  streams:\n    include: 5\n", "filters.streams.include", "expected a regular expression"),
    ("log:\n  level: verbose\n", "log.level", "must be one of debug, info, warning, error"),
    ("log:\n  level: debg\n", "log.level", "did you mean 'debug'"),
    ("log:\n  format: xml\n", "log.format", "must be one of text, json"),
    ("web:\n  listen_address: '10422'\n", "web.listen_address", "invalid listen address '10422'"),
    ("web:\n  listen_address: 'host:'\n", "web.listen_address", "port must be a number"),
    ("web:\n  listen_address: ':70000'\n", "web.listen_address", "port must be a number"),
    ("web:\n  listen_address: '::1:9000'\n", "web.listen_address", "IPv6 host needs brackets"),
    ("web:\n  listen_address: '[zz]:9000'\n", "web.listen_address", "invalid IPv6 address"),
    ("web:\n  listen_address: 'bad host:9000'\n", "web.listen_address", "invalid host 'bad host'"),
    ("web:\n  listen_address: '999.1.1.1:9000'\n", "web.listen_address", "invalid IPv4 address"),
    ("web:\n  config_file: missing.yml\n", "web.config_file", "file not found"),
    ("nats:\n  domain: a.b\n", "nats.domain", "invalid JetStream domain"),
    ("nats:\n  account: ''\n", "nats.account", "must not be empty"),
    ("nats:\n  tls:\n    key_file: config.yaml\n", "nats.tls.key_file", "needs a client certificate"),
    ("nats:\n  tls:\n    ca_file: nowhere.pem\n", "nats.tls.ca_file", "file not found"),
    ("nats:\n  tls:\n    ca_file: config.yaml\n", "nats.tls.ca_file", "cannot load the CA certificates"),
    (
        "nats:\n  tls:\n    cert_file: config.yaml\n",
        "nats.tls.cert_file",
        "cannot load the client certificate",
    ),
    ("nats:\n  tls:\n    ca_file: .\n", "nats.tls.ca_file", "not a regular file"),
    ("nats:\n  credentials_file: nowhere.creds\n", "nats.credentials_file", "file not found"),
    ("nats:\n  nkey_seed_file: nowhere.nk\n", "nats.nkey_seed_file", "file not found"),
    ("nats:\n  token: " + TOKEN + "\n", "nats.token", "more than one authentication method"),
    ("nats:\n  servers: [http://h:80]\n", "nats.servers", "unsupported scheme 'http'"),
    ("nats:\n  servers: ['nats://h:port']\n", "nats.servers", "invalid port"),
    ("nats:\n  servers: ['nats://:4222']\n", "nats.servers", "has no host"),
    (
        "nats:\n  servers: ['nats://me:" + PASSWORD + "@h:4222']\n",
        "nats.servers",
        "must not carry credentials",
    ),
    ("nats:\n  servers: 4222\n", "nats.servers", "expected a list of strings, got a number"),
    ("nats:\n  servers: []\n", "nats.servers", "must not be empty"),
    # every number and duration has a range
    (
        "collection:\n  concurrency: " + str(10**30) + "\n",
        "collection.concurrency",
        "must be at most 1024, got ",
    ),
    ("collection:\n  interval: 99999999999999h\n", "collection.interval", "must be at most 1d"),
    ("collection:\n  interval: 2d\n", "collection.interval", "must be at most 1d, got 2d"),
    ("collection:\n  stale_data_ttl: 31d\n", "collection.stale_data_ttl", "must be at most 30d"),
    (
        "collection:\n  lag_lookups_per_cycle: 1000001\n",
        "collection.lag_lookups_per_cycle",
        "at most 1000000",
    ),
    ("nats:\n  connect_timeout: 1h\n", "nats.connect_timeout", "must be at most 5m, got 1h"),
    ("collection:\n  request_timeout: 0s\n", "collection.request_timeout", "must be greater than zero"),
    ("collection:\n  request_timeout: 11s\n", "collection.request_timeout", "must not be longer than"),
    ("collection:\n  expected_servers: 0\n", "collection.expected_servers", "must be greater than zero"),
    ("collection:\n  scope: galaxy\n", "collection.scope", "must be one of auto, account, cluster"),
    ("collection:\n  shard: 3/3\n", "collection.shard", "the shard index must be from 0 to 2, got 3"),
    ("collection:\n  shard: 1/0\n", "collection.shard", "must be greater than zero, got 0"),
    ("collection:\n  shard: half\n", "collection.shard", 'expected "K/N"'),
    ("web:\n  max_connections: 10001\n", "web.max_connections", "must be at most 10000"),
    ("web:\n  max_connections: 0\n", "web.max_connections", "must be greater than zero"),
    ("web:\n  idle_timeout: 0\n", "web.idle_timeout", "must be greater than zero"),
    ("web:\n  read_header_timeout: 2h\n", "web.read_header_timeout", "must be at most 1h"),
    ("probe:\n  replicas: 6\n", "probe.replicas", "must be at most 5, got 6"),
    ("probe:\n  enabled: maybe\n", "probe.enabled", "expected true or false, got a string"),
    ("probe:\n  storage: disk\n", "probe.storage", "must be one of file, memory"),
    ("probe:\n  stream: A.B\n", "probe.stream", "invalid stream name 'A.B'"),
    ("probe:\n  subject: 'probe.*'\n", "probe.subject", "invalid subject 'probe.*'"),
    ("probe:\n  max_age: 0s\n", "probe.max_age", "must be greater than zero"),
    ("ack_latency:\n  buckets: [1s, 500ms]\n", "ack_latency.buckets", "ascending order"),
    ("ack_latency:\n  buckets: []\n", "ack_latency.buckets", "from 1 to 50 durations, got 0"),
    ("ack_latency:\n  buckets: [0, 1s]\n", "ack_latency.buckets", "must be greater than zero"),
    (
        "filters:\n  consumers:\n    ephemeral: some\n",
        "filters.consumers.ephemeral",
        "include, aggregate, exclude",
    ),
    ("filters:\n  accounts:\n    include: '(?=A)'\n", "filters.accounts.include", "invalid perl operator"),
    ("metrics:\n  exclude: ['(a)\\1']\n", "metrics.exclude", "invalid regular expression"),
    ("labels:\n  from_metadata: {a: 1}\n", "labels.from_metadata", "expected a list of strings"),
]


def merged_yaml(extra: str) -> str:
    """BASE_YAML with ``extra`` added, merging a second ``nats:`` section into the first."""
    if extra.startswith("nats:\n"):
        return BASE_YAML + extra.removeprefix("nats:\n")
    return BASE_YAML + extra


@pytest.mark.parametrize(
    ("extra", "key", "words"), FILE_ERRORS, ids=[case[1] + ":" + case[2] for case in FILE_ERRORS]
)
def test_file_errors_name_the_file_and_the_key(tmp_path, capsys, extra, key, words):
    config = write(tmp_path, merged_yaml(extra))
    err = check_config_fails(capsys, ["--config", str(config)])
    assert f"error: {config}: {key}: " in err
    assert words in err


def test_the_secret_in_a_wrongly_typed_password_is_not_shown(tmp_path, capsys):
    config = write(tmp_path, "nats:\n  user: u\n  password: 918273645\n")
    err = check_config_fails(capsys, ["--config", str(config)])
    assert "nats.password: expected a string, got a number (quote it in YAML)" in err
    assert "918273645" not in err


@pytest.mark.parametrize(
    ("yaml_text", "key", "words"),
    [
        (f"nats:\n  password: {PASSWORD}\n", "nats.password", "a password needs a user"),
        ("nats:\n  user: exporter\n", "nats.user", "a user needs a password"),
    ],
)
def test_password_and_user_go_together(tmp_path, capsys, yaml_text, key, words):
    config = write(tmp_path, yaml_text)
    err = check_config_fails(capsys, ["--config", str(config)])
    assert f"{config}: {key}: {words}" in err


def test_more_than_one_authentication_method_names_both_sources(tmp_path, capsys, monkeypatch):
    (tmp_path / "a.creds").write_text("", encoding="utf-8")
    config = write(tmp_path, "nats:\n  credentials_file: a.creds\n")
    monkeypatch.setenv(f"{ENV_PREFIX}NATS_TOKEN", TOKEN)
    err = check_config_fails(capsys, ["--config", str(config)])
    assert f"{config}: nats.credentials_file: more than one authentication method" in err
    assert f"nats.token (env {ENV_PREFIX}NATS_TOKEN) and nats.credentials_file ({config})" in err


def test_deadline_error_names_where_the_interval_came_from(tmp_path, capsys):
    config = write(tmp_path, "collection:\n  deadline: 10s\n")
    err = check_config_fails(capsys, ["--config", str(config), "--interval", "5s"])
    assert (
        f"{config}: collection.deadline: the deadline (10s) must be shorter than collection.interval" in err
    )
    assert "(5s, --interval)" in err


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("nats:\n  user: [unclosed\n", "not valid YAML: while parsing a flow sequence at line 2, column 9"),
        (
            f'nats:\n  password: "{PASSWORD}\n',
            "while scanning a quoted scalar at line 2, column 13",
        ),  # secret there
        ("nats: {user: a}\nnats: {user: b}\n", "not valid YAML: duplicate key 'nats' at line 2, column 1"),
        ("- a\n- b\n", "must be a mapping of keys, not a list"),
        ("just text\n", "must be a mapping of keys, not a string"),
    ],
)
def test_a_file_that_is_not_a_yaml_mapping(tmp_path, capsys, text, words):
    config = write(tmp_path, text)
    err = check_config_fails(capsys, ["--config", str(config)])
    assert f"error: {config}: " in err
    assert words in err


def test_unreadable_files(tmp_path, capsys):
    missing = tmp_path / "missing.yaml"
    err = check_config_fails(capsys, ["--config", str(missing)])
    assert f"{missing}: cannot read the configuration file: No such file or directory" in err

    err = check_config_fails(capsys, ["--config", str(tmp_path)])
    assert f"{tmp_path}: cannot read the configuration file: not a regular file (a directory)" in err

    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"log:\n  level: \xff\xfe\n")
    err = check_config_fails(capsys, ["--config", str(binary)])
    assert f"{binary}: the configuration file is not UTF-8 text" in err


@pytest.mark.timeout(10)
def test_a_fifo_or_a_device_is_refused_at_once_without_reading(tmp_path, capsys):
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)  # nobody writes to it: reading would wait for ever
    err = check_config_fails(capsys, ["--config", str(fifo)])
    assert f"{fifo}: cannot read the configuration file: not a regular file (a FIFO)" in err
    err = check_config_fails(capsys, ["--config", os.devnull])
    assert "not a regular file (a device)" in err


@pytest.mark.timeout(10)
def test_a_huge_file_is_refused_by_its_size(tmp_path, capsys):
    huge = tmp_path / "huge.yaml"
    with huge.open("wb") as handle:  # 50 MB of YAML comments: only the first MiB is ever read
        handle.write(b"# padding\n" * (5 * 1024 * 1024))
    err = check_config_fails(capsys, ["--config", str(huge)])
    assert f"{huge}: the configuration file is larger than 1024 KiB" in err


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000,
        "a: " + "{b: " * 5000 + "1" + "}" * 5000 + "\n",
        "a:\n" + "".join("  " * depth + "- \n" for depth in range(1, 200)),
    ],
    ids=["flow sequences", "flow mappings", "block sequences"],
)
def test_deeply_nested_yaml_is_one_line_not_a_recursion_error(tmp_path, capsys, text):
    config = write(tmp_path, "")
    config.write_text(text, encoding="utf-8")
    err = check_config_fails(capsys, ["--config", str(config)])
    assert f"{config}: not valid YAML: nested deeper than 32 levels" in err


def test_a_number_too_long_for_python_is_one_line(tmp_path, capsys):
    config = write(tmp_path, "collection:\n  concurrency: " + "9" * 5000 + "\n")
    err = check_config_fails(capsys, ["--config", str(config)])
    assert f"{config}: not valid YAML: a value cannot be converted" in err


@pytest.mark.parametrize(
    "case",
    [
        ("INTERVAL", "abc", "collection.interval", "invalid duration 'abc'"),
        ("CONCURRENCY", "lots", "collection.concurrency", "expected a whole number, got a string 'lots'"),
        ("LOG_FORMAT", "yaml", "log.format", "must be one of text, json"),
        ("WEB_LISTEN_ADDRESS", "localhost", "web.listen_address", "invalid listen address"),
        ("NATS_URL", f"nats://x:{PASSWORD}@h", "nats.servers", "must not carry credentials"),
        ("STREAM_EXCLUDE", "(", "filters.streams.exclude", "invalid regular expression"),
        ("NATS_PASSWORD", PASSWORD, "nats.password", "a password needs a user"),
        ("CONCURRENCY", "9" * 5000, "collection.concurrency", "got a string a value of 5000 characters"),
        ("SHARD", "2/2", "collection.shard", "the shard index must be from 0 to 1"),
        ("ACK_LATENCY_BUCKETS", "1s,1s", "ack_latency.buckets", "ascending order"),
        ("PROBE_ENABLED", "sometimes", "probe.enabled", "expected true or false"),
    ],
)
def test_environment_errors_name_the_variable(capsys, monkeypatch, case):
    name, value, key, words = case
    monkeypatch.setenv(ENV_PREFIX + name, value)
    err = check_config_fails(capsys, [])
    assert f"error: env {ENV_PREFIX}{name}: {key}: " in err
    assert words in err


@pytest.mark.parametrize(
    ("argv", "key", "words"),
    [
        (["--interval", "10 minutes"], "collection.interval", "invalid duration"),
        (["--interval=-5s"], "collection.interval", "must be greater than zero"),
        (["--web.listen-address", "[::1]"], "web.listen_address", "invalid listen address"),
        (["--log-level", "trace"], "log.level", "must be one of"),
        (["--dead-letter-stream", "AI DLQ"], "dead_letter_streams", "invalid stream name"),
        (["--nats-url", "nats://h:4222,udp://h:1"], "nats.servers", "unsupported scheme 'udp'"),
        (["--nats-url", "nats://[foo:4222"], "nats.servers", "not a server URL"),
        (["--web.config.file", "/nonexistent/web.yml"], "web.config_file", "file not found"),
        (["--interval", "99999999999999h"], "collection.interval", "must be at most 1d"),
        (["--interval", "9" * 500 + "s"], "collection.interval", "too long for a duration"),
        (["--collection.request-timeout", "2h"], "collection.request_timeout", "must be at most 1h"),
    ],
)
def test_flag_errors_name_the_flag(capsys, argv, key, words):
    flag = argv[0].split("=")[0]
    err = check_config_fails(capsys, argv)
    assert f"error: {flag}: {key}: " in err
    assert words in err


# -- TLS material is loaded, not only found --------------------------------------------------------------


def write_tls(tmp_path: Path, **files: Path) -> Path:
    """A configuration file with ``files`` (ca_file, cert_file, key_file) in nats.tls."""
    return write(tmp_path, "nats:\n  tls:\n" + "".join(f"    {key}: {path}\n" for key, path in files.items()))


def test_tls_files_that_load_are_accepted(tmp_path):
    pki = make_pki(tmp_path / "pki")
    ca, client = pki.ca.cert_file, pki.client
    config = write_tls(tmp_path, ca_file=ca, cert_file=client.cert_file, key_file=client.key_file)
    tls = load(["--config", str(config)]).nats.tls
    assert (tls.ca_file, tls.cert_file, tls.key_file) == (
        str(ca),
        str(client.cert_file),
        str(client.key_file),
    )


def test_an_encrypted_client_key_is_refused_without_prompting(tmp_path, capsys):
    client = make_authority(tmp_path, "ca").issue(tmp_path, "client", server=False, passphrase=b"passphrase")
    config = write_tls(tmp_path, cert_file=client.cert_file, key_file=client.key_file)
    err = check_config_fails(capsys, ["--config", str(config)])
    assert f"{config}: nats.tls.key_file: the client key is encrypted" in err


def test_a_key_that_does_not_match_the_certificate_is_refused(tmp_path, capsys):
    pki = make_pki(tmp_path / "pki")
    config = write_tls(tmp_path, cert_file=pki.client.cert_file, key_file=pki.server.key_file)
    err = check_config_fails(capsys, ["--config", str(config)])
    assert f"{config}: nats.tls.key_file: cannot load the client certificate and key" in err


# -- the documentation and the example ----------------------------------------------------------------------


def test_the_documentation_names_every_key_variable_and_flag():
    text = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    missing = [setting.key for setting in SETTINGS if f"`{setting.key}`" not in text]
    env_names = [setting.env_name for setting in SETTINGS if setting.env_name is not None]
    missing += [name for name in env_names if f"`{name}`" not in text]
    missing += [setting.flag for setting in SETTINGS if setting.flag and f"`{setting.flag}" not in text]
    missing += [word for word in ("`--config", f"`{ENV_PREFIX}CONFIG`", "`check-config`") if word not in text]
    assert missing == []


def test_the_example_configuration_passes_check_config(capsys):
    example = REPO / "examples" / "config.yaml"
    code = run_cli(["check-config", "--config", str(example)])
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert re.search(r"^  dead_letter_streams:\s+AI_DLQ\n", out, flags=re.MULTILINE)
    settings = load(["--config", str(example)])
    assert settings.dead_letter_streams == ("AI_DLQ",)
    assert settings.filters.stream_selected("AI_DLQ")
    assert settings.filters.stream_selected("COMPANIONS_CHAT")


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("AI_DLQ", None),
        ("dlq-2026", None),
        ("", "names cannot be empty"),
        ("AI.DLQ", "names cannot contain spaces, '.', '*', '>', '/' or '\\'"),
        ("AI\tDLQ", "names cannot contain spaces, '.', '*', '>', '/' or '\\'"),
        ("AI\u00a0DLQ", "names cannot contain spaces, '.', '*', '>', '/' or '\\'"),  # no-break space
        ("AI/DLQ", "names cannot contain spaces, '.', '*', '>', '/' or '\\'"),
        ("AI>", "names cannot contain spaces, '.', '*', '>', '/' or '\\'"),
    ],
)
def test_stream_names_are_checked_as_nats_checks_them(name, problem):
    assert validate_stream_name(name) == problem


def test_the_committed_settings_reference_is_up_to_date():
    text = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert text == splice(text, render_reference()), (
        "docs/configuration.md is out of date: run `make docs` "
        "(python -m exporter.configreference docs/configuration.md)"
    )


# -- the settings table ------------------------------------------------------------------------------------


def test_every_row_fills_a_field_and_names_are_unique():
    defaults = Settings()
    for setting in SETTINGS:
        field_value(defaults, setting.field)  # raises AttributeError for a row without its field
        assert setting.help, setting.key
        assert not (setting.secret and setting.flag), f"{setting.key}: a secret on the command line is public"
    for column in ("key", "field", "env", "flag"):
        names = [getattr(setting, column) for setting in SETTINGS if getattr(setting, column) is not None]
        assert len(names) == len(set(names)), column


def test_the_new_settings_have_their_defaults():
    settings = load()
    assert settings.collection.request_timeout_seconds == 5.0
    assert (settings.collection.scope, settings.collection.expected_servers) == ("auto", None)
    assert settings.collection.shard is None
    assert settings.filters.ephemeral == "aggregate"
    assert settings.filters.account_selected("ANY")
    assert settings.metrics.exclude == ()
    assert not settings.metrics.family_excluded("nats_stream_messages")
    assert settings.labels.from_metadata == ()
    assert (settings.web.read_header_timeout_seconds, settings.web.idle_timeout_seconds) == (10.0, 60.0)
    assert settings.web.max_connections == 100
    probe = settings.probe
    assert (probe.enabled, probe.stream, probe.subject) == (
        False,
        "NATS_EXPORTER_PROBE",
        "nats_exporter.probe",
    )
    assert (probe.storage, probe.replicas, probe.max_age_seconds) == ("memory", 1, 3600.0)
    assert settings.ack_latency.buckets[0] == 0.005
    assert settings.ack_latency.buckets[-1] == 300.0
    assert len(settings.ack_latency.buckets) == 15


def test_the_new_settings_are_read_from_the_file(tmp_path):
    config = write(
        tmp_path,
        """\
        web: {read_header_timeout: 5s, idle_timeout: 2m, max_connections: 20}
        collection:
          request_timeout: 2s
          scope: cluster
          expected_servers: 3
          shard: 1/4
        filters:
          accounts: {include: "AI|SYS", exclude: SYS}
          consumers: {ephemeral: exclude}
        metrics:
          exclude: [nats_consumer_info, "nats_dlq_.*"]
        labels:
          from_metadata: [team, tier]
        probe: {enabled: true, stream: PROBE, subject: probe.x, storage: file, replicas: 3, max_age: 10m}
        ack_latency:
          buckets: [10ms, 1s, 1m]
        """,
    )
    settings = load(["--config", str(config)])
    web = settings.web
    assert (web.read_header_timeout_seconds, web.idle_timeout_seconds, web.max_connections) == (
        5.0,
        120.0,
        20,
    )
    collection = settings.collection
    assert (collection.request_timeout_seconds, collection.scope) == (2.0, "cluster")
    assert (collection.expected_servers, collection.shard) == (3, (1, 4))
    assert settings.filters.account_selected("AI")
    assert not settings.filters.account_selected("SYS")
    assert not settings.filters.account_selected("OTHER")
    assert settings.filters.ephemeral == "exclude"
    assert settings.metrics.family_excluded("nats_consumer_info")
    assert settings.metrics.family_excluded("nats_dlq_messages")
    assert not settings.metrics.family_excluded("nats_consumer_info_extra")  # full match
    assert settings.labels.from_metadata == ("team", "tier")
    assert settings.probe == ProbeSettings(
        enabled=True, stream="PROBE", subject="probe.x", storage="file", replicas=3, max_age_seconds=600.0
    )
    assert settings.ack_latency.buckets == (0.01, 1.0, 60.0)


def test_the_new_settings_are_read_from_the_environment_and_flags():
    env = {
        f"{ENV_PREFIX}SHARD": "0/2",
        f"{ENV_PREFIX}ACK_LATENCY_BUCKETS": "1ms, 10ms,1s",
        f"{ENV_PREFIX}PROBE_ENABLED": "yes",
        f"{ENV_PREFIX}LABELS_FROM_METADATA": "team,tier",
        f"{ENV_PREFIX}METRICS_EXCLUDE": "nats_consumer_.{1,10}",  # one expression: not split on commas
        f"{ENV_PREFIX}REQUEST_TIMEOUT": "1s",
    }
    settings = load(env=env)
    assert settings.collection.shard == (0, 2)
    assert settings.ack_latency.buckets == (0.001, 0.01, 1.0)
    assert settings.probe.enabled
    assert settings.labels.from_metadata == ("team", "tier")
    assert settings.metrics.family_excluded("nats_consumer_info")
    assert settings.collection.request_timeout_seconds == 1.0
    flagged = load(["--collection.request-timeout", "3s"], env)
    assert flagged.collection.request_timeout_seconds == 3.0


def test_the_request_timeout_default_shrinks_with_the_deadline():
    assert load(["--interval", "3s"]).collection.request_timeout_seconds == 2.0
    assert load(["--interval", "1m"]).collection.request_timeout_seconds == 5.0


# -- filters are RE2: linear in the name's length ------------------------------------------------------------


@pytest.mark.timeout(5)
def test_a_pathological_pattern_does_not_backtrack(tmp_path):
    # With Python's re, '(a+)+$' against 'aaa...X' takes exponential time: seconds at 30 characters.
    config = write(tmp_path, "filters:\n  streams:\n    include: '(a+)+$'\n")
    filters = load(["--config", str(config)]).filters
    name = "a" * 5000 + "X"
    assert not any(filters.stream_selected(name) for _ in range(100))
    assert filters.stream_selected("a" * 5000)


@pytest.mark.parametrize(
    ("pattern", "words"),
    [
        ("(?=AI)AI_.*", "invalid regular expression '(?=AI)AI_.*': invalid perl operator"),
        ("(AI)\\1", "invalid escape sequence"),
        ("A{1001}", "invalid repetition size"),
    ],
)
def test_patterns_re2_refuses_are_one_line(tmp_path, capsys, pattern, words):
    config = write(tmp_path, f"filters:\n  streams:\n    exclude: '{pattern}'\n")
    err = check_config_fails(capsys, ["--config", str(config)])
    assert f"{config}: filters.streams.exclude: " in err
    assert words in err


# -- values in messages --------------------------------------------------------------------------------


LONG_VALUE = "eyJhbGciOiJFZDI1NTE5In0.looks-like-a-token-and-is-long-enough-to-hide"


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        (f"log:\n  level: {LONG_VALUE}\n", "log.level"),
        (f"nats:\n  servers: ['nats://{LONG_VALUE}:port']\n", "nats.servers"),
        (f"nats:\n  domain: {LONG_VALUE}.x\n", "nats.domain"),
        (f"collection:\n  interval: {LONG_VALUE}\n", "collection.interval"),
        (f"dead_letter_streams: ['{LONG_VALUE}']\n", "dead_letter_streams"),
        (f"filters:\n  streams:\n    include: '({LONG_VALUE}'\n", "filters.streams.include"),
        (f"web:\n  listen_address: '{LONG_VALUE}'\n", "web.listen_address"),
    ],
)
def test_a_long_value_is_described_not_quoted(tmp_path, capsys, yaml_text, key):
    config = write(tmp_path, yaml_text)
    err = check_config_fails(capsys, ["--config", str(config)])
    assert f"{config}: {key}: " in err
    assert LONG_VALUE not in err
    assert "characters (not shown)" in err


@pytest.mark.parametrize("value", ["[1, 2]", "{a: b}", "12345678901234", "yes"])
def test_a_value_given_to_a_secret_is_never_quoted(tmp_path, capsys, value):
    config = write(tmp_path, f"nats:\n  token: {value}\n")
    err = check_config_fails(capsys, ["--config", str(config)])
    assert f"{config}: nats.token: expected a string, got " in err
    assert value not in err


def test_metadata_keys_that_would_become_one_label_are_refused():
    env = {f"{ENV_PREFIX}LABELS_FROM_METADATA": "a.b,a-b"}
    with pytest.raises(ConfigError, match="would all become the label metadata_a_b"):
        load(env=env)
