"""The tamper-evident purpose audit log: RFC 6962 Merkle tree (merkle), canonical leaf bytes
(leaf), Ed25519 checkpoint signing (signing), the append-only log store across runs (log),
records made outside a run (events) and the auditor's verification (verify)."""
