"""Client certificate login on the real server's ActiveSync virtual directory: a
certificate from `mailhost cert issue-client` logs its user in without Basic (accept and
require); one from another CA never gets past the TLS handshake; require refuses a
request without a certificate (403, no Basic challenge); a certificate naming nobody
does not log in."""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Mapping
from pathlib import Path

import pytest
import trustme
from eas_client import EasClient, EasResponse
from harness import Instance, Server
from test_eas_policy_support import client, folder_sync_status


class CertificateClient(EasClient):
    """An EasClient that never sends Basic credentials."""

    def request(
        self,
        method: str,
        target: str,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        *,
        auth: bool = True,
    ) -> EasResponse:
        return super().request(method, target, body, headers, auth=False)


def issued(instance: Instance, address: str) -> tuple[Path, Path]:
    result = instance.cli("cert", "issue-client", address)
    assert "PKCS#12" in result.stdout
    folder = instance.folder / "certs" / "clients"
    return folder / f"{address}.crt", folder / f"{address}.key"


def certificate_client(
    server: Server, instance: Instance, chain: tuple[Path, Path] | None, **options: object
) -> CertificateClient:
    context = instance.client_context(check_hostname=False)
    if chain is not None:
        context.load_cert_chain(*chain)
    return CertificateClient(
        server.port("https"),
        context,
        instance.user,
        "",
        host="127.0.0.1",
        version="16.1",
        **options,  # type: ignore[arg-type]
    )


def test_client_certificates_accept_then_require(instance: Instance, tmp_path: Path) -> None:
    instance.set_config("activesync", "client_certificates", '"accept"')
    mine = issued(instance, instance.user)
    instance.add_user("zed@example.test")
    nobody = issued(instance, "zed@example.test")
    instance.cli("user", "remove", "zed@example.test")
    other_ca = trustme.CA()
    foreign = other_ca.issue_cert(instance.user)
    foreign_chain = (tmp_path / "foreign.crt", tmp_path / "foreign.key")
    foreign.cert_chain_pems[0].write_to_path(str(foreign_chain[0]))
    foreign.private_key_pem.write_to_path(str(foreign_chain[1]))
    with instance.start() as server:
        phone = certificate_client(server, instance, mine)
        try:
            assert phone.options().status == 200
            key = phone.provision()
            assert folder_sync_status(phone).status_at() == 1
        finally:
            phone.close()
        assert "certificate login user=demo@example.test" in server.log()
        # Accept: without a certificate, Basic still works, and is still asked for.
        bare = certificate_client(server, instance, None)
        assert bare.options().status == 401
        basic = client(server, instance)
        assert basic.options().status == 200
        # A certificate of a user who no longer exists does not log in.
        stale = certificate_client(server, instance, nobody, device_id="STALE1")
        assert stale.options().status == 401
        # A certificate from another CA: the handshake fails; nothing is served.
        intruder = certificate_client(server, instance, foreign_chain, device_id="EVIL1")
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            intruder.options()
        for each in (bare, basic, stale, intruder):
            each.close()

        instance.set_config("activesync", "client_certificates", '"require"')
        server.reload()
        refused = client(server, instance)  # a correct password, no certificate
        answer = refused.options()
        assert answer.status == 403 and "www-authenticate" not in answer.headers
        refused.close()
        stale = certificate_client(server, instance, nobody, device_id="STALE1")
        assert stale.options().status == 403
        stale.close()
        phone = certificate_client(server, instance, mine, policy_key=key)
        try:
            assert folder_sync_status(phone).status_at() == 1
        finally:
            phone.close()
        # Autodiscover is not the ActiveSync directory: Basic still works there.
        discovery = client(server, instance)
        assert discovery.autodiscover(instance.user).status == 200
        discovery.close()
    assert "certificate from 127.0.0.1 names no user" in server.log()
