"""Opening an incoming S/MIME message: decrypt it with the practice's key, check every signature, unwrap.

asn1crypto parses the CMS (cryptography cannot read BER indefinite lengths, RSA-OAEP, AuthEnvelopedData, nor
verify CMS signatures) and cryptography does the arithmetic. Whether a signer is *trusted* is not decided here
(transports/direct/trust.py): this returns the certificates and what was mathematically true.
Nothing is fetched from the network and nothing of the content is logged (it is PHI).
"""

from __future__ import annotations

import base64
import binascii
import quopri
import re
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32

from asn1crypto import cms, core
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import padding, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.padding import MGF1, OAEP, PKCS1v15
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from transports.direct.cms_verify import DAMAGED, HASHES, SignerResult, names_certificate, set_der, verify

MAX_MESSAGE_BYTES = 50 * 1024 * 1024
MAX_LAYERS = 4
_PKCS7_MIME = {"application/pkcs7-mime", "application/x-pkcs7-mime"}
_PKCS7_SIGNATURE = {"application/pkcs7-signature", "application/x-pkcs7-signature"}
_AES_CBC = {"aes128_cbc": 16, "aes192_cbc": 24, "aes256_cbc": 32}
_AES_GCM = {"aes128_gcm": 16, "aes192_gcm": 24, "aes256_gcm": 32}
_HEADER_END = re.compile(rb"\r?\n\r?\n")

__all__ = ["MAX_MESSAGE_BYTES", "Opened", "SignerResult", "SmimeError", "open_message"]


class SmimeError(Exception):
    """Why a message cannot be opened (or sealed), in a sentence for the user."""


@dataclass
class Opened:
    encrypted: bool = False
    signed: bool = False
    signers: list[SignerResult] = field(default_factory=list)
    certificates: list[x509.Certificate] = field(default_factory=list)
    content: bytes = b""
    wrapped: bool = False
    content_encryption: str = ""  # e.g. "aes256_cbc", "aes128_gcm"


class _GcmParameters(core.Sequence):
    _fields = [("aes_nonce", core.OctetString), ("aes_icvlen", core.Integer, {"default": 12})]


# --- MIME, on the raw bytes -----------------------------------------------------------------------------

def split_entity(entity: bytes) -> tuple[Message, bytes]:
    """Headers (parsed) and body (the raw bytes after the blank line, untouched)."""
    if entity.startswith((b"\r\n", b"\n")):
        return Message(), entity[2 if entity.startswith(b"\r\n") else 1:]
    match = _HEADER_END.search(entity)
    head, body = (entity[:match.start()], entity[match.end():]) if match else (entity, b"")
    return BytesHeaderParser(policy=compat32).parsebytes(head + b"\r\n\r\n"), body


def _decoded(headers: Message, body: bytes) -> bytes:
    encoding = str(headers.get("Content-Transfer-Encoding", "")).strip().lower()
    if encoding == "base64":
        try:
            return base64.b64decode(re.sub(rb"[^A-Za-z0-9+/=]", b"", body))
        except binascii.Error as exc:
            raise SmimeError("the encrypted or signed part is not valid base64 (damaged in transit?)") from exc
    if encoding == "quoted-printable":
        return quopri.decodestring(body)
    return body


def _signed_parts(headers: Message, body: bytes) -> tuple[bytes, bytes]:
    """The two parts of a multipart/signed body, the first exactly as received (RFC 1847)."""
    boundary = headers.get_boundary()
    if not boundary:
        raise SmimeError("the signed message has no MIME boundary, so its parts cannot be found")
    delimiter = re.compile(rb"(?:\A|\r?\n)--" + re.escape(boundary.encode("ascii", "replace"))
                           + rb"(--)?[ \t]*(?:\r?\n|\Z)")
    marks = list(delimiter.finditer(body))
    parts = []
    for mark, following in zip(marks, marks[1:]):
        if mark.group(1):
            break
        parts.append(body[mark.end():following.start()])
    if len(parts) != 2:
        raise SmimeError(f"a signed message must have 2 parts (content and signature); this one has {len(parts)}")
    return parts[0], parts[1]


# --- CMS helpers ----------------------------------------------------------------------------------------

def _content_info(der: bytes) -> cms.ContentInfo:
    try:
        info = cms.ContentInfo.load(der, strict=False)
        info["content_type"].native  # noqa: B018 - parse now so damage is reported here
        return info
    except DAMAGED as exc:
        raise SmimeError("the S/MIME part is damaged (not a readable CMS structure)") from exc


# --- decryption -----------------------------------------------------------------------------------------

def _key_padding(algorithm) -> object:
    name = algorithm["algorithm"].native
    if name in ("rsaes_pkcs1v15", "rsa"):
        return PKCS1v15()
    if name == "rsaes_oaep":
        params = algorithm["parameters"]
        digest = params["hash_algorithm"]["algorithm"].native
        mgf_digest = params["mask_gen_algorithm"]["parameters"]["algorithm"].native
        label = params["p_source_algorithm"]["parameters"].native or None
        if digest not in HASHES or mgf_digest not in HASHES:
            raise SmimeError(f"the message key is wrapped with RSA-OAEP/{digest}, which is not supported")
        return OAEP(MGF1(HASHES[mgf_digest]()), HASHES[digest](), label)
    raise SmimeError(f"the message key is wrapped with {name}, which is not supported (RSA key transport only)")


def _recipient_keys(recipient_infos, identities) -> list[tuple[object, object]]:
    """(our private key, KeyTransRecipientInfo) for every recipient entry addressed to one of our certificates."""
    ours = [(identity.private_key, ax509.Certificate.load(
        identity.certificate.public_bytes(serialization.Encoding.DER))) for identity in identities]
    found, kinds = [], set()
    for info in recipient_infos:
        kinds.add(info.name)
        if info.name != "ktri":
            continue
        for key, cert in ours:
            if isinstance(key, rsa.RSAPrivateKey) and names_certificate(info.chosen["rid"], cert):
                found.append((key, info.chosen))
    if not found:
        if kinds and "ktri" not in kinds:
            raise SmimeError("the message is encrypted with key agreement (EC) or a shared key, which referdesk "
                             "cannot open; ask the sender to use RSA certificates")
        raise SmimeError("the message is not encrypted for this practice's certificate")
    return found


def _decrypt_content(algorithm, key: bytes, data: bytes, mac: bytes | None, aad: bytes) -> bytes | None:
    """Plaintext, or None when this key does not open it (wrong key, damaged, or tag mismatch)."""
    name = algorithm["algorithm"].native
    if name in _AES_GCM:
        if len(key) != _AES_GCM[name]:
            return None
        params = _GcmParameters.load(algorithm["parameters"].dump())
        try:
            decryptor = Cipher(algorithms.AES(key), modes.GCM(params["aes_nonce"].native, mac,
                                                              min_tag_length=12)).decryptor()
            decryptor.authenticate_additional_data(aad)
            return decryptor.update(data) + decryptor.finalize()
        except (InvalidTag, ValueError):
            return None
    if name in _AES_CBC:
        if len(key) != _AES_CBC[name]:
            return None
        cipher, block = algorithms.AES(key), 128
    elif name == "tripledes_3key":
        from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
        if len(key) != 24:
            return None
        cipher, block = TripleDES(key), 64
    else:
        raise SmimeError(f"the message content is encrypted with {name}, which is not supported "
                         "(AES-CBC, AES-GCM and 3DES are)")
    iv = algorithm["parameters"].native
    if not isinstance(iv, bytes) or len(iv) * 8 != block or len(data) % (block // 8):
        return None
    decryptor = Cipher(cipher, modes.CBC(iv)).decryptor()
    padded = decryptor.update(data) + decryptor.finalize()
    unpadder = padding.PKCS7(block).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        return None


def decrypt(info: cms.ContentInfo, identities) -> tuple[bytes, str]:
    """(plaintext, content cipher name) of an EnvelopedData or AuthEnvelopedData."""
    kind = info["content_type"].native
    envelope = info["content"]
    authenticated = kind == "authenticated_enveloped_data"
    content_info = envelope["auth_encrypted_content_info" if authenticated else "encrypted_content_info"]
    algorithm = content_info["content_encryption_algorithm"]
    data = content_info["encrypted_content"].native
    if data is None:
        raise SmimeError("the encrypted message carries no content (detached), so there is nothing to open")
    mac, aad = None, b""
    if authenticated:
        mac = envelope["mac"].native
        if not isinstance(envelope["auth_attrs"], core.Void):
            aad = set_der(envelope["auth_attrs"])
    for private_key, recipient in _recipient_keys(envelope["recipient_infos"], identities):
        try:
            key = private_key.decrypt(recipient["encrypted_key"].native,
                                      _key_padding(recipient["key_encryption_algorithm"]))
        except ValueError:
            continue
        plain = _decrypt_content(algorithm, key, data, mac, aad)
        if plain is not None:
            return plain, algorithm["algorithm"].native
    raise SmimeError("the message could not be decrypted with this practice's key (damaged, or encrypted "
                     "with a different key for the same certificate)")


# --- the whole message ----------------------------------------------------------------------------------

def _signed_data(der: bytes) -> cms.SignedData:
    info = _content_info(der)
    if info["content_type"].native != "signed_data":
        raise SmimeError("the signature part is not a CMS SignedData")
    return info["content"]


def _record_signers(opened: Opened, signed_data: cms.SignedData, content: bytes) -> None:
    signers, certs = verify(signed_data, content)
    if not signers:
        raise SmimeError("the message is marked as signed but carries no signature")
    opened.signed = True
    opened.signers += signers
    opened.certificates += certs


def _peel(entity: bytes, opened: Opened, identities) -> bytes | None:
    """Remove one S/MIME layer (decrypt or verify) into `opened`; the inner entity, or None if none is left."""
    headers, body = split_entity(entity)
    content_type = headers.get_content_type()
    if content_type == "multipart/signed":
        content, signature = _signed_parts(headers, body)
        sig_headers, sig_body = split_entity(signature)
        if sig_headers.get_content_type() not in _PKCS7_SIGNATURE:
            raise SmimeError(f"the second part of the signed message is {sig_headers.get_content_type()}, "
                             "not a PKCS#7 signature")
        _record_signers(opened, _signed_data(_decoded(sig_headers, sig_body)), content)
        return content
    if content_type not in _PKCS7_MIME:
        return None
    info = _content_info(_decoded(headers, body))
    kind = info["content_type"].native
    if kind in ("enveloped_data", "authenticated_enveloped_data"):
        if opened.encrypted:
            raise SmimeError("the message is encrypted twice, which referdesk does not open")
        plain, opened.content_encryption = decrypt(info, identities)
        opened.encrypted = True
        return plain
    if kind == "signed_data":
        inner = info["content"]["encap_content_info"]["content"]
        if isinstance(inner, core.Void) or inner.native is None:
            raise SmimeError("the signed message carries no content")
        content = bytes(inner.native)
        _record_signers(opened, info["content"], content)
        return content
    raise SmimeError(f"not a CMS EnvelopedData (the S/MIME part holds {kind})")


def open_message(raw: bytes, identities) -> Opened:
    """Decrypt with whichever of `identities` the message is for, verify every signature, unwrap message/rfc822.

    Raises SmimeError when the message cannot be opened at all; a signature that fails is reported in
    Opened.signers (digest_ok / signature_ok / error) so the caller decides, with trust, what to accept."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise SmimeError(f"the message is larger than {MAX_MESSAGE_BYTES // (1024 * 1024)} MB and was not opened")
    entity = raw.removeprefix(b"\xef\xbb\xbf")
    opened = Opened()
    try:
        for _ in range(MAX_LAYERS):
            inner = _peel(entity, opened, identities)
            if inner is None:
                break
            entity = inner
        else:
            raise SmimeError("the message is nested too deeply to open")
        headers, body = split_entity(entity)
    except DAMAGED as exc:
        raise SmimeError(f"the message is damaged and could not be opened ({type(exc).__name__})") from exc
    if (opened.signed or opened.encrypted) and headers.get_content_type() == "message/rfc822":
        opened.content, opened.wrapped = body, True
    else:
        opened.content = entity
    return opened
