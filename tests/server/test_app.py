"""The extension loads, is configured by traitlets and owns one store and its services."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest
from traitlets import TraitError

from nbflow.client.embedded import EmbeddedClient
from nbflow_server import NbflowApp
from nbflow_server.tokens import RunTokenSigner, load_or_create_secret


def test_every_trait_has_help() -> None:
    for name, trait in NbflowApp.class_own_traits(config=True).items():
        assert trait.help, f"NbflowApp.{name} has no help"


def test_extension_is_loaded_with_its_config(
    jp_serverapp: Any, nbflow_app: NbflowApp, tmp_path: Any
) -> None:
    assert nbflow_app.db_url == f"sqlite:///{tmp_path / 'nbflow.db'}"
    assert isinstance(nbflow_app.client, EmbeddedClient)
    assert nbflow_app.services_enabled is False
    assert nbflow_app.services.running == []
    assert nbflow_app.api_url().endswith("/nbflow/api/v1")


def test_bad_trait_values_are_refused() -> None:
    app = NbflowApp()
    with pytest.raises(TraitError, match="scheduler_interval"):
        app.scheduler_interval = 0
    with pytest.raises(TraitError, match="global_concurrency_limit"):
        app.global_concurrency_limit = 0


def test_run_tokens_verify_only_their_run(tmp_path: Any) -> None:
    secret = load_or_create_secret(tmp_path / "s")
    assert (tmp_path / "s").stat().st_mode & 0o777 == 0o600
    assert load_or_create_secret(tmp_path / "s") == secret
    signer = RunTokenSigner(secret)
    run_a, run_b = uuid4(), uuid4()
    token = signer.mint(run_a)
    assert signer.verify(token) == run_a
    forged = token.replace(str(run_a), str(run_b))
    assert signer.verify(forged) is None
    assert signer.verify("some-jupyter-token") is None
    assert RunTokenSigner(b"x" * 64).verify(token) is None


def test_mint_run_token(nbflow_app: NbflowApp) -> None:
    run_id = uuid4()
    assert nbflow_app.signer.verify(nbflow_app.mint_run_token(run_id)) == run_id
