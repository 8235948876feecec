"""S/MIME for Direct: sign, encrypt and seal an outgoing referral; open an incoming message (cms_open).

CMS is built with asn1crypto around cryptography's primitives rather than with `pkcs7.PKCS7SignatureBuilder`:
that emits `x-pkcs7-signature` and LF line endings, both of which receivers like ETT reject, and the exact
bytes a signature covers matter more here than anywhere else (STANDARDS.md, "Direct message format").
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os

from asn1crypto import algos, cms
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from transports.direct.cms_open import Opened, SmimeError, open_message
from transports.direct.cms_verify import SignerResult
from transports.direct.mime import (CRLF, Part, base64_lines, boundary_for, canonical, compose_message, header,
                                    transport_headers, wrap_rfc822)

__all__ = ["Part", "Opened", "SignerResult", "SmimeError", "compose_message", "sign", "encrypt",
           "seal_message", "open_message"]

_CAPABILITIES = ["aes256_cbc", "aes192_cbc", "aes128_cbc"]


def _asn1(cert: x509.Certificate) -> ax509.Certificate:
    return ax509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


def _issuer_serial(cert: ax509.Certificate) -> cms.IssuerAndSerialNumber:
    return cms.IssuerAndSerialNumber({"issuer": cert.issuer, "serial_number": cert.serial_number})


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


def _signed_attributes(digest: bytes, signing_time: dt.datetime | None) -> cms.CMSAttributes:
    attrs = [cms.CMSAttribute({"type": "content_type", "values": ["data"]})]
    if signing_time is not None:
        when = _utc(signing_time)
        time = cms.Time({"utc_time": when} if 1950 <= when.year < 2050 else {"generalized_time": when})  # RFC 5652
        attrs.append(cms.CMSAttribute({"type": "signing_time", "values": [time]}))
    attrs.append(cms.CMSAttribute({"type": "message_digest", "values": [digest]}))
    attrs.append(cms.CMSAttribute({"type": "smime_capabilities",
                                   "values": [[{"capability_id": c} for c in _CAPABILITIES]]}))
    return cms.CMSAttributes(attrs)


def signature_der(content: bytes, identity, *, signing_time: dt.datetime | None = None) -> bytes:
    """A detached CMS SignedData (SHA-256) over `content`, with the signer's certificate and chain embedded."""
    key = identity.private_key
    attrs = _signed_attributes(hashlib.sha256(content).digest(), signing_time)
    to_sign = attrs.dump()  # DER SET OF, sorted: what every verifier re-encodes before checking
    if isinstance(key, rsa.RSAPrivateKey):
        signature, algorithm = key.sign(to_sign, PKCS1v15(), hashes.SHA256()), "rsassa_pkcs1v15"
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        signature, algorithm = key.sign(to_sign, ec.ECDSA(hashes.SHA256())), "sha256_ecdsa"
    else:
        raise SmimeError("the practice's key is neither RSA nor EC, so it cannot sign Direct messages")
    signer = _asn1(identity.certificate)
    signer_info = cms.SignerInfo({
        "version": "v1",
        "sid": cms.SignerIdentifier({"issuer_and_serial_number": _issuer_serial(signer)}),
        "digest_algorithm": algos.DigestAlgorithm({"algorithm": "sha256"}),
        "signed_attrs": attrs,
        "signature_algorithm": algos.SignedDigestAlgorithm({"algorithm": algorithm}),
        "signature": signature,
    })
    signed_data = cms.SignedData({
        "version": "v1",
        "digest_algorithms": [algos.DigestAlgorithm({"algorithm": "sha256"})],
        "encap_content_info": {"content_type": "data"},
        "certificates": [signer] + [_asn1(c) for c in identity.extra_certs],
        "signer_infos": [signer_info],
    })
    return cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()


def sign(entity: bytes, identity, *, signing_time: dt.datetime | None = None) -> bytes:
    """`entity` (a MIME entity with its own headers, e.g. wrap_rfc822(message)) as multipart/signed.

    The signature covers the entity's canonical CRLF bytes exactly as they appear as the first part."""
    entity = canonical(entity)
    signature = (header("Content-Type", "application/pkcs7-signature; name=smime.p7s")
                 + header("Content-Transfer-Encoding", "base64")
                 + header("Content-Disposition", "attachment; filename=smime.p7s") + CRLF
                 + base64_lines(signature_der(entity, identity, signing_time=signing_time)))
    boundary = boundary_for("signed", entity)
    marker = b"--" + boundary.encode()
    if marker in entity:  # impossible for our own content ('=_' cannot occur in base64 or QP), cheap to check
        raise SmimeError("cannot sign: the content contains the MIME boundary")
    content_type = header("Content-Type", 'multipart/signed; protocol="application/pkcs7-signature"; '
                                          f'micalg=sha-256;\r\n boundary="{boundary}"')
    # RFC 1847: the CRLF before a delimiter belongs to the delimiter, so the first part is `entity` exactly.
    return (content_type + CRLF + marker + CRLF + entity + CRLF + marker + CRLF + signature + marker + b"--"
            + CRLF)


def _recipient_info(cert: x509.Certificate, key: bytes) -> cms.RecipientInfo:
    public = cert.public_key()
    if not isinstance(public, rsa.RSAPublicKey):
        raise SmimeError("the recipient's certificate has no RSA key; referdesk encrypts to RSA certificates only")
    return cms.RecipientInfo({"ktri": cms.KeyTransRecipientInfo({
        "version": "v0",
        "rid": cms.RecipientIdentifier({"issuer_and_serial_number": _issuer_serial(_asn1(cert))}),
        "key_encryption_algorithm": cms.KeyEncryptionAlgorithm({"algorithm": "rsaes_pkcs1v15"}),
        "encrypted_key": public.encrypt(key, PKCS1v15()),
    })})


def enveloped_der(content: bytes, recipient_certs: list[x509.Certificate]) -> bytes:
    """CMS EnvelopedData: AES-256-CBC content, the key RSA-encrypted (PKCS#1 v1.5) to each recipient."""
    if not recipient_certs:
        raise SmimeError("no recipient certificate to encrypt to")
    key, iv = os.urandom(32), os.urandom(16)
    padder = padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    encrypted = encryptor.update(padder.update(content) + padder.finalize()) + encryptor.finalize()
    enveloped = cms.EnvelopedData({
        "version": "v0",
        "recipient_infos": [_recipient_info(c, key) for c in recipient_certs],
        "encrypted_content_info": {
            "content_type": "data",
            "content_encryption_algorithm": algos.EncryptionAlgorithm({"algorithm": "aes256_cbc", "parameters": iv}),
            "encrypted_content": encrypted,
        },
    })
    return cms.ContentInfo({"content_type": "enveloped_data", "content": enveloped}).dump()


def encrypt(entity: bytes, recipient_certs: list[x509.Certificate]) -> bytes:
    """`entity` encrypted as an application/pkcs7-mime enveloped-data entity (base64, 76-column CRLF lines)."""
    return (header("Content-Type", "application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m")
            + header("Content-Transfer-Encoding", "base64")
            + header("Content-Disposition", "attachment; filename=smime.p7m") + CRLF
            + base64_lines(enveloped_der(canonical(entity), recipient_certs)))


def seal_message(*, sender: str, recipients: list[str], subject: str, text: str, attachments: list[Part],
                 message_id: str, date: dt.datetime, identity, recipient_certs: list[x509.Certificate],
                 request_mdn: bool = True) -> bytes:
    """The complete outgoing Direct message: transport headers around encrypt(sign(wrapped inner message)).

    Message-ID and date are inputs, so a retry sends the same message identity (only the crypto differs)."""
    inner = compose_message(sender=sender, recipients=recipients, subject=subject, text=text,
                            attachments=attachments, message_id=message_id, date=date, request_mdn=request_mdn)
    signed = sign(wrap_rfc822(inner), identity, signing_time=date)
    return (transport_headers(sender=sender, recipients=recipients, subject=subject, message_id=message_id,
                              date=date)
            + encrypt(signed, recipient_certs))


def seal_inner(inner: bytes, *, sender: str, recipients: list[str], subject: str, message_id: str,
               date: dt.datetime, identity, recipient_certs: list[x509.Certificate]) -> bytes:
    """Seal a message composed elsewhere (an MDN): wrapped, signed, encrypted, under transport headers."""
    signed = sign(wrap_rfc822(inner), identity, signing_time=date)
    return (transport_headers(sender=sender, recipients=recipients, subject=subject, message_id=message_id,
                              date=date)
            + encrypt(signed, recipient_certs))
