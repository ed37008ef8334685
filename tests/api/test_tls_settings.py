"""`engine serve --tls-cert/--tls-key` (or ENGINE_TLS_CERT/ENGINE_TLS_KEY): files checked at start.

A bad certificate or key stops the server before it starts, with a message naming the file and
what is wrong with it, rather than a server that fails every handshake.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from engine.cli import build_parser
from engine.cli.serve import cmd_serve
from engine.cli.settings_args import settings_from
from tests.api.test_fal_client import Chain, make_chain


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    return make_chain(tmp_path_factory.mktemp("tls"))


def serve(tmp_path: Path, *flags: str) -> str:
    """The reason `engine serve` refuses to start with these flags."""
    args = build_parser().parse_args(["--base-dir", str(tmp_path), "serve", "--open-access", *flags])
    args.custom_nodes = []
    with pytest.raises(SystemExit) as stopped:
        cmd_serve(args)
    return str(stopped.value)


def test_a_certificate_needs_its_key_and_the_reverse(tmp_path: Path, chain: Chain) -> None:
    assert "--tls-cert needs --tls-key too" in serve(tmp_path, "--tls-cert", str(chain.cert))
    assert "--tls-key needs --tls-cert too" in serve(tmp_path, "--tls-key", str(chain.key))


def test_unreadable_or_wrong_files_are_named(tmp_path: Path, chain: Chain) -> None:
    missing = tmp_path / "nowhere.pem"
    message = serve(tmp_path, "--tls-cert", str(missing), "--tls-key", str(chain.key))
    assert f"--tls-cert {missing}: cannot read it" in message
    message = serve(tmp_path, "--tls-cert", str(chain.key), "--tls-key", str(chain.key))
    assert f"--tls-cert {chain.key}: not a PEM certificate" in message
    message = serve(tmp_path, "--tls-cert", str(chain.cert), "--tls-key", str(chain.cert))
    assert f"--tls-key {chain.cert}: not a PEM private key" in message


def test_a_key_of_another_certificate_or_an_encrypted_key_is_refused(tmp_path: Path, chain: Chain) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    unencrypted = tmp_path / "other-key.pem"
    unencrypted.write_bytes(
        other.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    message = serve(tmp_path, "--tls-cert", str(chain.cert), "--tls-key", str(unencrypted))
    assert f"--tls-key {unencrypted} is not the key of --tls-cert {chain.cert}" in message
    encrypted = tmp_path / "encrypted-key.pem"
    key = serialization.load_pem_private_key(chain.key.read_bytes(), password=None)
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    message = serve(tmp_path, "--tls-cert", str(chain.cert), "--tls-key", str(encrypted))
    assert "the key is encrypted" in message and "openssl pkey" in message


def test_environment_variables_name_the_files(monkeypatch: pytest.MonkeyPatch, chain: Chain) -> None:
    monkeypatch.setenv("ENGINE_TLS_CERT", str(chain.cert))
    monkeypatch.setenv("ENGINE_TLS_KEY", str(chain.key))
    settings = settings_from(build_parser().parse_args(["--custom-nodes", "custom_nodes", "serve"]))
    assert (settings.tls_cert, settings.tls_key) == (chain.cert, chain.key)
