"""Checking the signatures of a CMS SignedData against the exact bytes that were signed.

Each SignerInfo gets its own verdict (digest, signature, a sentence when either fails) rather than an
exception, because Direct accepts a message when at least one signer is good and trusted (STANDARDS.md);
trust itself is decided in transports/direct/trust.py from the certificates returned here.
"""

from __future__ import annotations

import hashlib
import hmac
import warnings
from dataclasses import dataclass

from asn1crypto import cms, core
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import MGF1, PSS, PKCS1v15

from transports.direct.mime import canonical

HASHES = {"sha1": hashes.SHA1, "sha224": hashes.SHA224, "sha256": hashes.SHA256, "sha384": hashes.SHA384,
          "sha512": hashes.SHA512}
DAMAGED = (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError, RecursionError)


@dataclass
class SignerResult:
    certificate: x509.Certificate | None
    digest_ok: bool
    signature_ok: bool
    error: str = ""
    digest_algorithm: str = ""

    @property
    def ok(self) -> bool:
        return self.digest_ok and self.signature_ok


class _Unverifiable(Exception):
    pass


def crypto_cert(cert: ax509.Certificate) -> x509.Certificate | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # old senders' certificates (e.g. serial 0) only warn
        try:
            return x509.load_der_x509_certificate(cert.dump())
        except ValueError:
            return None


def names_certificate(identifier: core.Choice, cert: ax509.Certificate) -> bool:
    """A RecipientIdentifier / SignerIdentifier names this certificate (issuer+serial or key identifier)."""
    if identifier.name == "issuer_and_serial_number":
        chosen = identifier.chosen
        return chosen["serial_number"].native == cert.serial_number and chosen["issuer"] == cert.issuer
    return identifier.chosen.native in (cert.key_identifier, cert.public_key.sha1)


def set_der(attrs) -> bytes:
    """Signed/authenticated attributes as the SET OF they were signed as: the received encoding, retagged."""
    return attrs.untag().dump()


def _attribute(attrs, name: str):
    for attr in attrs:
        if attr["type"].native == name:
            values = attr["values"]
            return values[0] if len(values) else None
    return None


def _verify_signature(public_key, signature: bytes, data: bytes, algorithm, digest_name: str) -> None:
    kind = algorithm.signature_algo
    try:
        hash_name = algorithm.hash_algo
    except ValueError:
        hash_name = digest_name
    if hash_name not in HASHES:
        raise _Unverifiable(f"signature hash {hash_name} is not supported")
    chosen = HASHES[hash_name]()
    if kind == "rsassa_pkcs1v15" and isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(signature, data, PKCS1v15(), chosen)
    elif kind == "rsassa_pss" and isinstance(public_key, rsa.RSAPublicKey):
        params = algorithm["parameters"]
        mgf = params["mask_gen_algorithm"]["parameters"]["algorithm"].native
        if mgf not in HASHES:
            raise _Unverifiable(f"RSA-PSS with MGF1/{mgf} is not supported")
        public_key.verify(signature, data, PSS(MGF1(HASHES[mgf]()), params["salt_length"].native), chosen)
    elif kind == "ecdsa" and isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(signature, data, ec.ECDSA(chosen))
    else:
        raise _Unverifiable(f"a {kind} signature does not fit the signer's {type(public_key).__name__} key")


def _check_signer(signer, content: bytes, certs: list[tuple[ax509.Certificate, x509.Certificate | None]]
                  ) -> SignerResult:
    cert = next((mine for asn1, mine in certs if names_certificate(signer["sid"], asn1)), None)
    digest_name = signer["digest_algorithm"]["algorithm"].native
    result = SignerResult(cert, False, False, digest_algorithm=digest_name)
    if cert is None:
        result.error = "the signer's certificate is not included in the message"
        return result
    if digest_name not in HASHES:
        result.error = f"digest algorithm {digest_name} is not supported"
        return result
    # As received first; CRLF-canonical too, for senders or stores that turned the line endings into LF.
    variants = [content] if canonical(content) == content else [content, canonical(content)]
    attrs, signature = signer["signed_attrs"], signer["signature"].native
    try:
        if isinstance(attrs, core.Void) or not len(attrs):
            # No signed attributes: the signature is over the content itself, so it is the digest check too.
            for number, variant in enumerate(variants, 1):
                try:
                    _verify_signature(cert.public_key(), signature, variant, signer["signature_algorithm"],
                                      digest_name)
                    break
                except InvalidSignature:
                    if number == len(variants):
                        result.error = "the signature does not match the content (tampered?)"
                        raise
            result.digest_ok = True
        else:
            expected = _attribute(attrs, "message_digest")
            result.digest_ok = expected is not None and any(
                hmac.compare_digest(expected.native, hashlib.new(digest_name, v).digest()) for v in variants)
            if not result.digest_ok:
                result.error = "the signature does not match the content (tampered?)"
            _verify_signature(cert.public_key(), signature, set_der(attrs), signer["signature_algorithm"],
                              digest_name)
        result.signature_ok = True
    except InvalidSignature:
        result.error = result.error or "the signature is not valid for the signer's certificate"
    except _Unverifiable as exc:
        result.error = result.error or str(exc)
    except (UnsupportedAlgorithm, *DAMAGED) as exc:
        result.error = result.error or f"the signature cannot be checked ({type(exc).__name__})"
    return result


def verify(signed_data: cms.SignedData, content: bytes) -> tuple[list[SignerResult], list[x509.Certificate]]:
    """Every SignerInfo checked against `content`; the results and every embedded certificate."""
    choices = signed_data["certificates"]
    certs = [] if isinstance(choices, core.Void) else [
        (choice.chosen, crypto_cert(choice.chosen)) for choice in choices if choice.name == "certificate"]
    signers = [_check_signer(signer, content, certs) for signer in signed_data["signer_infos"]]
    return signers, [mine for _, mine in certs if mine is not None]
