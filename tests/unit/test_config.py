import os
import stat

import pytest

from selfpay.config import Settings, load_settings


def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("SELFPAY_") and not key.startswith("SELFPAY_TEST_") and (
            key != "SELFPAY_REQUIRE_SERVERS"
        ):
            monkeypatch.delenv(key)


def test_missing_secrets_are_generated_once_into_a_private_file(tmp_path, monkeypatch):
    _clean_env(monkeypatch)
    monkeypatch.chdir(tmp_path)
    first = load_settings(data_dir=tmp_path / "data")
    second = load_settings(data_dir=tmp_path / "data")
    secrets_file = tmp_path / "data" / "secrets.env"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert first.secret_key.get_secret_value() == second.secret_key.get_secret_value()
    assert first.keyring() == second.keyring()
    assert len(first.keyring().keys["1"]) == 32


def test_production_refuses_to_start_without_secrets(tmp_path, monkeypatch):
    _clean_env(monkeypatch)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="SECRET_KEY"):
        load_settings(env="production", data_dir=tmp_path)
    assert not (tmp_path / "secrets.env").exists()


@pytest.mark.parametrize(("broker", "ok"), [
    ({}, False),
    ({"broker_user": "dmz"}, False),  # a user without a password
    ({"broker_user": "dmz", "broker_password": "p"}, True),
    ({"broker_cert_file": "/etc/selfpay/client.pem"}, True),  # certificate login
])
def test_production_refuses_a_broker_link_without_a_login(broker, ok, tmp_path, monkeypatch):
    _clean_env(monkeypatch)
    s = Settings(env="production", data_dir=tmp_path, secret_key="k" * 32,
                 qr_keys="1:MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE=",
                 database_url="postgresql+psycopg://db/selfpay", transport="stomp",
                 broker_urls="stomp+ssl://mq:61614", **broker)
    if ok:
        s.check_production()
    else:
        with pytest.raises(ValueError, match="client certificate"):
            s.check_production()


def test_secrets_never_appear_in_the_settings_repr(tmp_path, monkeypatch):
    _clean_env(monkeypatch)
    monkeypatch.chdir(tmp_path)
    s = load_settings(data_dir=tmp_path)
    assert s.secret_key.get_secret_value() not in repr(s)
    assert s.qr_keys.get_secret_value() not in repr(s)


@pytest.mark.parametrize("url", ["https://pay.example.cn/a?b=c", "https://pay.example.cn/a_b"])
def test_a_base_url_outside_the_qr_alphanumeric_set_is_refused(url, monkeypatch):
    _clean_env(monkeypatch)
    with pytest.raises(ValueError, match="alphanumeric"):
        Settings(public_base_url=url)


def test_rotated_keyring_keeps_old_key_and_signs_with_the_active_one(monkeypatch):
    _clean_env(monkeypatch)
    k1 = "MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE="
    k2 = "MjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjI="
    s = Settings(qr_keys=f"1:{k1},2:{k2}")
    ring = s.keyring()
    assert ring.active == "2" and set(ring.keys) == {"1", "2"}
    assert Settings(qr_keys=f"1:{k1},2:{k2}", qr_active_key="1").keyring().active == "1"
    with pytest.raises(ValueError, match="base64"):
        Settings(qr_keys="1:not base64!").keyring()
