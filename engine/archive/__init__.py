"""The archive tier: Redis is the hot tier, the archive holds the rest (DESIGN §4, docs/archive.md).

The archiver copies each partition log, in order, into immutable, compressed, checksummed
segments in an archive store (a directory, an S3-compatible bucket, or memory), with a manifest
per partition, then trims what Redis no longer needs to hold. Readers (replay, the audit, the
ledger listing, an execution's history) read the archive first and the hot tail after it.

    segments.py   the segment format and names (pure)
    manifest.py   a partition's manifest generations (pure)
    stores.py     ArchiveStore: the object store behind it (obstore: file, s3, memory)
    catalog.py    reading manifests and segments, checked against their sha256
    copy.py       the next log or ledger segment of a partition, and the manifest commit
    trim.py       the trim floor (pure) and trimming a log to it
    retention.py  what else Redis forgets: applied charges, ledgers, feeds; the accounts index
    archiver.py   the archiver role's loop: leases, copy, mirror, trim
    reader.py     the log, a ledger and an execution's history: archive, then the hot tail
    report.py     ``clipstream archive status | verify | export``

Owns the keys ``{pN}:archive``, ``{pN}:archive:lease``, ``{pN}:charges:open`` and
``{pN}:accounts`` (engine.log.keys). May import the log room and below (log, connection,
settings, clock, errors); the roles above it (runtime, money, the API's commands) import it. The
read side's checkpoints reach the trim floor as a function passed in (trim.Consumers), since the
engine imports no projection.
"""
