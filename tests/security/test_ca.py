"""The fleet CA: what it signs, what it refuses, what it revokes; and the device's renewal check."""

from __future__ import annotations

import json
import stat
from datetime import datetime, timedelta, timezone
from ipaddress import ip_address

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import Criticality, ExtensionPolicy, PolicyBuilder, Store

from fleet_protocol.errors import BadDataError
from edge_agent.identity import new_device_key_and_csr
from fleet_protocol.root import certificate_expiry, needs_renewal
from fleet_server.ca import SERVER_IDENTITY, CertificateAuthority, CertificateRequestError

SHA1_CSR = b"""\
-----BEGIN CERTIFICATE REQUEST-----
MIICVTCCAT0CAQAwEDEOMAwGA1UEAwwFZGV2LTEwggEiMA0GCSqGSIb3DQEBAQUA
A4IBDwAwggEKAoIBAQC7ONk11DmrissgZq0LUyAngzyNDaI9SOk55hepGtN65n3f
LQoiqzU7uzz0OHY23g++gEoEcFl7Sh31xnryKlS/glU17MTRoBz3rzlr+qblv3AE
LbeYsGUMrZbzB+YKMWHMMWJfYjiJGh3fM1dAH+4Xa1yCo2La0KcjQ80UgOuvZsR/
7OqfIX0ZbLoTMCqvr0Evpg36bTq7OtVOAeUNSngc4fma+uTRCUm+XpHa3LkKX3wx
7u1puJX1xwKKX/Ew3+SVoDzlO8yFHztvcC8KPQMSL/juefZYZI5Plri1IdXrVOHk
lUJRVXUrf05pfh6xkt06ssz3A16Ud4EMlB/oxQfNAgMBAAGgADANBgkqhkiG9w0B
AQUFAAOCAQEAJvOdZXafKfd2gkX5mT9Yj0DicPFypU2w6iHoqaOPV21yRbXQRruy
h5fi6mF1+Z2MfZQKxRG1lQy/lQPMIABOjF6/ICKnZw+DVosvbs1Khk0/giV7gdf7
/muKXe3gn5E9DSqibS02F2jKT1b5Pj4WU6pi8K2mTM9NaTvP0J8+ll/fa1a4D3LF
r422H/D4oDDBITjWyqcXtsUbuml01IuNQUNTiKMwgu3eMgds4+Ui+w44ypqBOknp
/kuab+zgLJQOfn+ZsR+EyloSYitHA1pJxO4Omzk8iP8DwZWc3i2zm9tpvdxM3yMR
VQegmdw9MJ1rXMwGGisfc/urG6zSmvicMg==
-----END CERTIFICATE REQUEST-----
"""  # `openssl req -new -sha1 -subj /CN=dev-1` with an RSA-2048 key; cryptography no longer signs with SHA-1

# An hour ahead: a CA made by a fixture later in a slow run must already be valid at NOW.
NOW = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=1)


@pytest.fixture
def ca(tmp_path) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(tmp_path / "ca")


def csr_for(name: str, key=None) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])).sign(key, algorithm))
    return csr.public_bytes(serialization.Encoding.PEM)


def test_ca_is_created_once_with_private_key_files_and_loaded_afterwards(tmp_path):
    first = CertificateAuthority.load_or_create(tmp_path / "ca")
    assert stat.S_IMODE((tmp_path / "ca").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "ca" / "ca.key").stat().st_mode) == 0o600
    again = CertificateAuthority.load_or_create(tmp_path / "ca")
    assert again.certificate_pem() == first.certificate_pem()


def test_ca_certificate_may_sign_certificates_and_crls_only(ca):
    cert = ca.certificate
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert (usage.key_cert_sign, usage.crl_sign, usage.digital_signature) == (True, True, False)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc > timedelta(days=3649)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)


def test_issued_certificate_verifies_against_the_ca_and_is_a_client_certificate_for_the_device(ca):
    _, csr = new_device_key_and_csr("dev-1")
    cert = x509.load_pem_x509_certificate(ca.sign_csr(csr, device_id="dev-1", now=NOW))
    cert.verify_directly_issued_by(ca.certificate)
    no_san_required = ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)  # the identity is the CN, as Mosquitto reads it
    verifier = (PolicyBuilder().store(Store([ca.certificate])).time(NOW)
                .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=no_san_required)
                .build_client_verifier())
    verifier.verify(cert, [])  # RFC 5280 path validation as a client certificate
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "dev-1"
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == \
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca.certificate.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier).value.digest
    assert cert.not_valid_before_utc == NOW - timedelta(minutes=1)
    assert cert.not_valid_after_utc == NOW + timedelta(days=90)


def test_certificates_get_random_distinct_serials(ca):
    serials = {x509.load_pem_x509_certificate(ca.sign_csr(csr_for("dev-1"), device_id="dev-1")).serial_number
               for _ in range(5)}
    assert len(serials) == 5 and min(serials) > 2**64


def test_csr_with_wrong_common_name_is_refused(ca):
    with pytest.raises(CertificateRequestError, match="expected the single common name 'dev-1'"):
        ca.sign_csr(csr_for("dev-2"), device_id="dev-1")


def test_csr_with_bad_signature_is_refused(ca):
    der = x509.load_pem_x509_csr(csr_for("dev-1")).public_bytes(serialization.Encoding.DER)
    tampered = x509.load_der_x509_csr(der.replace(b"dev-1", b"dev-2"))  # same structure, signature now wrong
    with pytest.raises(CertificateRequestError, match="signature does not verify"):
        ca.sign_csr(tampered.public_bytes(serialization.Encoding.PEM), device_id="dev-2")


@pytest.mark.parametrize("make_key", [lambda: rsa.generate_private_key(65537, 1024),
                                      lambda: ec.generate_private_key(ec.SECP256K1())], ids=["rsa-1024", "secp256k1"])
def test_csr_with_weak_or_unsupported_key_is_refused(ca, make_key):
    with pytest.raises(CertificateRequestError, match="not accepted|too weak"):
        ca.sign_csr(csr_for("dev-1", make_key()), device_id="dev-1")


@pytest.mark.parametrize("make_key", [lambda: rsa.generate_private_key(65537, 2048),
                                      ed25519.Ed25519PrivateKey.generate], ids=["rsa-2048", "ed25519"])
def test_csr_with_strong_rsa_or_ed25519_key_is_signed(ca, make_key):
    assert b"BEGIN CERTIFICATE" in ca.sign_csr(csr_for("dev-1", make_key()), device_id="dev-1")


def test_csr_signed_with_sha1_is_refused(ca):
    with pytest.raises(CertificateRequestError, match="sha1, which is too weak"):
        ca.sign_csr(SHA1_CSR, device_id="dev-1")


@pytest.mark.parametrize("device_id", [SERVER_IDENTITY, "Dev/1", "dev-#", ""])
def test_csr_for_the_server_identity_or_an_invalid_device_id_is_refused(ca, device_id):
    with pytest.raises(CertificateRequestError, match="not a valid device id"):
        ca.sign_csr(csr_for(device_id or "x"), device_id=device_id)


def test_csr_that_is_not_pem_is_refused_as_bad_data(ca):
    with pytest.raises(BadDataError, match="not a PEM certificate signing request"):
        ca.sign_csr(b"-----BEGIN CERTIFICATE REQUEST-----\ngarbage\n", device_id="dev-1")


def test_server_certificate_names_the_broker_and_is_for_servers_only(ca):
    key_pem, cert_pem = ca.issue_server_certificate(["localhost", "broker.example"], ["127.0.0.1"])
    cert = x509.load_pem_x509_certificate(cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost", "broker.example"]
    assert sans.get_values_for_type(x509.IPAddress) == [ip_address("127.0.0.1")]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == \
        [ExtendedKeyUsageOID.SERVER_AUTH]
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert key.public_key() == cert.public_key()


def test_server_client_identity_is_a_client_certificate_named_edgefleet_server(ca):
    _, cert_pem = ca.issue_client_identity()
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == SERVER_IDENTITY
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == \
        [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_revoked_serial_appears_in_the_crl_signed_by_the_ca(ca, tmp_path):
    serial = x509.load_pem_x509_certificate(ca.sign_csr(csr_for("dev-1"), device_id="dev-1")).serial_number
    before = x509.load_pem_x509_crl(ca.crl_pem())
    assert before.get_revoked_certificate_by_serial_number(serial) is None
    ca.revoke(serial, reason="key_compromise", now=NOW)
    crl = x509.load_pem_x509_crl(ca.crl_pem(now=NOW))
    assert crl.is_signature_valid(ca.certificate.public_key())
    entry = crl.get_revoked_certificate_by_serial_number(serial)
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise
    assert crl.next_update_utc == NOW + timedelta(days=7)
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number > before.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def test_revocations_survive_a_restart_and_revoking_twice_lists_the_serial_once(tmp_path):
    ca = CertificateAuthority.load_or_create(tmp_path / "ca")
    ca.revoke(1234, reason="superseded")
    CertificateAuthority.load_or_create(tmp_path / "ca").revoke(1234, reason="superseded")
    reloaded = CertificateAuthority.load_or_create(tmp_path / "ca")
    crl = x509.load_pem_x509_crl(reloaded.crl_pem())
    assert [entry.serial_number for entry in crl] == [1234]
    assert [e["serial"] for e in json.loads((tmp_path / "ca" / "revoked.json").read_text())["revoked"]] == [1234]


def test_crl_past_half_its_life_is_reissued(ca):
    first = x509.load_pem_x509_crl(ca.crl_pem(now=NOW))
    assert ca.crl_pem(now=NOW + timedelta(days=1)) == first.public_bytes(serialization.Encoding.PEM)
    later = x509.load_pem_x509_crl(ca.crl_pem(now=NOW + timedelta(days=4)))
    assert later.next_update_utc == NOW + timedelta(days=11)


def test_unknown_revocation_reason_is_refused(ca):
    with pytest.raises(ValueError, match="unknown revocation reason"):
        ca.revoke(1, reason="because")


def test_needs_renewal_true_within_30_days_of_expiry(ca):
    _, csr = new_device_key_and_csr("dev-1")
    cert = ca.sign_csr(csr, device_id="dev-1", valid_days=90, now=NOW)
    assert certificate_expiry(cert) == NOW + timedelta(days=90)
    assert not needs_renewal(cert, NOW + timedelta(days=59))
    assert needs_renewal(cert, NOW + timedelta(days=60))
    assert needs_renewal(cert, NOW + timedelta(days=120))
    assert not needs_renewal(cert, NOW + timedelta(days=80), renew_before=timedelta(days=7))


def test_certificate_expiry_of_garbage_is_bad_data():
    with pytest.raises(BadDataError, match="not a PEM certificate"):
        certificate_expiry(b"not a certificate")
