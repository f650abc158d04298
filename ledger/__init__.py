"""A permissioned hash-ledger for document notarisation.

Validator nodes of several institutions order SHA-256 digests of documents into an append-only
RFC 9162 Merkle tree with a BFT consensus, and hand out C2SP tlog-proof receipts that anyone can
verify offline with the document, the receipt and the published trust policy.
"""

__version__ = "0.1.0"
