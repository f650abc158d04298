"""Ways to tamper with a receipt of :mod:`ground`, each with the reason the verifier gives."""

from __future__ import annotations

import base64
from collections.abc import Callable

from ledger.checkpoint import cosign, parse_checkpoint_body

from .ground import BASE_TIME, validator

INDEX = 5


def split(receipt: str) -> tuple[list[str], list[str], list[str]]:
    """(proof header lines, checkpoint body lines, signature lines) of a receipt."""
    head, checkpoint = receipt.split("\n\n", 1)
    body, sigs = checkpoint.split("\n\n", 1)
    return head.split("\n"), body.split("\n"), sigs.rstrip("\n").split("\n")


def join(head: list[str], body: list[str], sigs: list[str]) -> str:
    return "\n".join(head) + "\n\n" + "\n".join(body) + "\n\n" + "\n".join(sigs) + "\n"


def flip_b64(text: str, byte: int) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[byte] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def tamper_path(r: str) -> str:
    head, body, sigs = split(r)
    head[2] = flip_b64(head[2], 0)
    return join(head, body, sigs)


def tamper_index(r: str) -> str:
    head, body, sigs = split(r)
    head[1] = f"index {INDEX + 1}"
    return join(head, body, sigs)


def tamper_size(r: str) -> str:
    head, body, sigs = split(r)
    body[1] = str(int(body[1]) + 1)
    return join(head, body, sigs)


def tamper_root(r: str) -> str:
    head, body, sigs = split(r)
    body[2] = flip_b64(body[2], 31)
    return join(head, body, sigs)


def tamper_origin(r: str) -> str:
    head, body, sigs = split(r)
    body[0] = "ledger.example.org/other"
    return join(head, body, sigs)


def tamper_log_signature(r: str) -> str:
    head, body, sigs = split(r)
    name, blob = sigs[0].rsplit(" ", 1)
    sigs[0] = f"{name} {flip_b64(blob, 20)}"
    return join(head, body, sigs)


def tamper_cosignature_byte(r: str) -> str:
    head, body, sigs = split(r)
    name, blob = sigs[2].rsplit(" ", 1)
    sigs[2] = f"{name} {flip_b64(blob, 40)}"
    return join(head, body, sigs)


def tamper_cosignature_time(r: str) -> str:
    head, body, sigs = split(r)
    name, blob = sigs[1].rsplit(" ", 1)
    sigs[1] = f"{name} {flip_b64(blob, 11)}"  # the last byte of the 8-byte timestamp
    return join(head, body, sigs)


def drop_two_cosignatures(r: str) -> str:
    head, body, sigs = split(r)
    return join(head, body, sigs[:3])  # log + 2 of 4 cosignatures; 3 needed


def duplicate_cosignature_line(r: str) -> str:
    head, body, sigs = split(r)
    return join(head, body, [*sigs[:3], sigs[2]])  # log + 2 cosignatures, one of them twice


def foreign_cosignature(r: str) -> str:
    # Replace two cosignatures by ones from a validator the policy does not know.
    head, body, sigs = split(r)
    cp = parse_checkpoint_body("\n".join(body) + "\n")
    stranger = validator(9, tag="stranger")
    line = cosign(cp, name=stranger.name, key=stranger.cosigner_key, timestamp=BASE_TIME)
    return join(head, body, [*sigs[:3], line.line().rstrip("\n")])


def impostor_with_known_name(r: str) -> str:
    # A stranger signs under a known validator's name: its key ID differs, so it is ignored.
    head, body, sigs = split(r)
    cp = parse_checkpoint_body("\n".join(body) + "\n")
    stranger = validator(9, tag="stranger")
    line = cosign(cp, name="v3.example.org", key=stranger.cosigner_key, timestamp=BASE_TIME)
    return join(head, body, [*sigs[:3], line.line().rstrip("\n")])


def drop_log_signature(r: str) -> str:
    head, body, sigs = split(r)
    return join(head, body, sigs[1:])


def drop_path_element(r: str) -> str:
    head, body, sigs = split(r)
    return join(head[:-1], body, sigs)


TAMPERINGS: list[tuple[Callable[[str], str], str]] = [
    (tamper_path, "not in the checkpointed tree"),
    (drop_path_element, "not in the checkpointed tree"),
    (tamper_index, "not in the checkpointed tree"),
    (tamper_size, "does not verify"),
    (tamper_root, "does not verify"),
    (tamper_origin, "does not verify"),
    (tamper_log_signature, "does not verify"),
    (tamper_cosignature_byte, "does not verify"),
    (tamper_cosignature_time, "does not verify"),
    (drop_two_cosignatures, "quorum 'validators' not met"),
    (duplicate_cosignature_line, "two signatures"),
    (foreign_cosignature, "quorum 'validators' not met"),
    (impostor_with_known_name, "quorum 'validators' not met"),
    (drop_log_signature, "trusted log"),
]
