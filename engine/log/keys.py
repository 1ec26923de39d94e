"""Every Redis key name clipstream uses, built in one place.

Everything that belongs to one owner lives in that owner's partition, ``crc32(owner) % P``, and
every such key carries the partition's hash tag ``{pN}``: one owner's keys share one cluster slot,
so a script may touch any of them atomically. Keys without a tag (``meta``, API-key hashes) are only
ever used by single-key commands.

Two scripts (DISPATCH in engine.log.leases) find a key from a value they read: the ready list of
the owner next in the ring and the stream of the execution they lease. They are given the prefix of
those names (``ready_prefix``, ``execution_prefix``), the same prefix ``ready`` and ``execution``
build on, so every name is still spelled here and still carries the partition's tag.

    {prefix}meta                       hash: partitions, projection version
    {prefix}workers                    hash: worker id -> when it last beat (ms), for status
    {prefix}apikey:{sha256}            string: account id of an API key (key hash only)
    {prefix}revocations                stream: one entry per sessions revocation (account, the
                                       instant), tailed by every API process (api.sessions);
                                       kept for the longest token lifetime
    {prefix}rl:{{LIMITER/…}}[/-1]      strings: the rate limits' sliding-window counters (the
                                       ``limits`` library names the rest: api.rate_limits)
    {prefix}{{pN}}:log                 stream: every event of the partition (the partition log)
    {prefix}{{pN}}:x:{execution_id}    stream: one execution's events, entry id ``{seq}-0``
    {prefix}{{pN}}:dead                stream: dead-lettered leases (and, written by older
                                       workers, log entries) with the reason
    {prefix}{{pN}}:retried             hash: execution id -> seq of its latest ExecutionRetried
                                       (a retried dead letter: its first end was not its last)
    {prefix}{{pN}}:ready:{owner}       list: an owner's executions waiting, oldest first
    {prefix}{{pN}}:ring                list: owners with waiting executions, in round-robin order
    {prefix}{{pN}}:work                stream: one entry per leased execution (its lease, worker
                                       group ``workers``); deleted when the lease is released
    {prefix}{{pN}}:running             hash: owner -> leased executions (the global per-owner cap)
    {prefix}{{pN}}:cancels             set: executions with a cancel request and no end yet (the
                                       append that records either adds or removes it); what a
                                       worker checks with its leases instead of reading the log
    {prefix}{{pN}}:bal:{account}       string: balance in micro-coins
    {prefix}{{pN}}:ledger:{account}    stream: the account's charges, refunds and credits
    {prefix}{{pN}}:charges             hash: charge id -> amount, so no charge applies twice
    {prefix}{{pN}}:reads               zset: read charges admitted, not yet settled, by time
    {prefix}{{pN}}:idem:{account}:{k}  string: fingerprint and execution id of an Idempotency-Key
    {prefix}{{pN}}:acct:{account}      hash: the account record (``sessions_after``: session
                                       tokens issued at or before this instant (ms) are revoked)
    {prefix}{{pN}}:{kind}:{id}         string (JSON): a synchronous resource (item, …)
    {prefix}{{pN}}:{kind}s:{account}   zset: an owner's resources of one kind, by id
    {prefix}{{pN}}:src:{account}:{h}   zset: the owner's items of one source (h: sha256 of its
                                       detected type and external id), by id
    {prefix}{{pN}}:{rel}:{parent_id}   zset: a relation (engine.resources.relations): colitems,
                                       itemcols, colschs, repwfs, repschs, itemdocs, repdocs
    {prefix}{{pN}}:blob:{sha256}       string: a large output stored once by content hash
    {prefix}{{pN}}:schdue              zset: ``{owner} {schedule_id}`` -> next due tick (ms) of
                                       every enabled schedule of the partition
    {prefix}{{pN}}:schrun:{schedule}   string: execution id of the schedule's latest run (in
                                       flight until that execution is terminal)
    {prefix}{{pN}}:schseen:{schedule}  hash: video id -> ``{run execution id} {execution id}`` of
                                       every video a run of the schedule processed
    {prefix}{{pN}}:feed:{owner}        stream: the owner's realtime feed (projections.feed)
    {prefix}{{pN}}:feedlive            stream: one entry per projector commit that appended feed
                                       entries, naming those feeds (what the API hubs block on)
    {prefix}{{pN}}:accounts            set: the partition's accounts (whose ledgers and feeds the
                                       archiver keeps to their hot window)
    {prefix}{{pN}}:archive             hash: the archive's position and health for the partition,
                                       mirrored from its manifest (engine.archive)
    {prefix}{{pN}}:archive:lease       string: the archiver holding the partition (SET NX PX)
    {prefix}{{pN}}:charges:open        hash: execution id -> charge ids already archived while
                                       the execution ran, forgotten from ``charges`` when it ends
    {prefix}{{pN}}:v{n}:...            projection namespace n (views, indexes, checkpoint)
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass

from engine.log.ids import execution_partition

WORKER_GROUP = "workers"


def partition_of(owner_id: str, partitions: int) -> int:
    """The partition an owner (account) belongs to."""
    return zlib.crc32(owner_id.encode()) % partitions


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names for one deployment (``prefix``) with ``partitions`` partitions."""

    prefix: str = "cs:"
    partitions: int = 16

    # -- routing ----------------------------------------------------------------------------------
    def partition(self, owner_id: str) -> int:
        return partition_of(owner_id, self.partitions)

    def tag(self, partition: int) -> str:
        return f"{self.prefix}{{p{partition}}}"

    # -- global (single-key use only) -------------------------------------------------------------
    @property
    def meta(self) -> str:
        return f"{self.prefix}meta"

    @property
    def workers(self) -> str:
        return f"{self.prefix}workers"

    @property
    def rate_limits(self) -> str:
        """The prefix of the rate limits' counters (``limits`` adds ``:`` and its own name, hash
        tag included)."""
        return f"{self.prefix}rl"

    def api_key(self, key_hash: str) -> str:
        return f"{self.prefix}apikey:{key_hash}"

    @property
    def revocations(self) -> str:
        """The stream of sessions revocations every API process tails (api.sessions)."""
        return f"{self.prefix}revocations"

    # -- the log ----------------------------------------------------------------------------------
    def log(self, partition: int) -> str:
        return f"{self.tag(partition)}:log"

    def execution(self, execution_id: str) -> str:
        return f"{self.execution_prefix(execution_partition(execution_id))}{execution_id}"

    def execution_prefix(self, partition: int) -> str:
        """What an execution id is appended to for its stream's name, in ``partition``."""
        return f"{self.tag(partition)}:x:"

    def dead(self, partition: int) -> str:
        return f"{self.tag(partition)}:dead"

    def retried(self, partition: int) -> str:
        return f"{self.tag(partition)}:retried"

    # -- dispatch (engine.log.admission: request; engine.log.leases: dispatch, leases) -----------
    def ready(self, owner_id: str) -> str:
        return f"{self.ready_prefix(self.partition(owner_id))}{owner_id}"

    def ready_prefix(self, partition: int) -> str:
        """What an owner id is appended to for its ready list's name, in ``partition``."""
        return f"{self.tag(partition)}:ready:"

    def ring(self, partition: int) -> str:
        return f"{self.tag(partition)}:ring"

    def work(self, partition: int) -> str:
        return f"{self.tag(partition)}:work"

    def running(self, partition: int) -> str:
        return f"{self.tag(partition)}:running"

    def cancels(self, partition: int) -> str:
        return f"{self.tag(partition)}:cancels"

    # -- money ------------------------------------------------------------------------------------
    def balance(self, account_id: str) -> str:
        return f"{self.balance_prefix(self.partition(account_id))}{account_id}"

    def balance_prefix(self, partition: int) -> str:
        """What an account id is appended to for its balance's name, in ``partition``."""
        return f"{self.tag(partition)}:bal:"

    def ledger(self, account_id: str) -> str:
        return f"{self.ledger_prefix(self.partition(account_id))}{account_id}"

    def ledger_prefix(self, partition: int) -> str:
        """What an account id is appended to for its ledger's name, in ``partition``."""
        return f"{self.tag(partition)}:ledger:"

    def charges(self, partition: int) -> str:
        return f"{self.tag(partition)}:charges"

    def read_charges(self, partition: int) -> str:
        return f"{self.tag(partition)}:reads"

    def idempotency(self, account_id: str, key_digest: str) -> str:
        return f"{self.tag(self.partition(account_id))}:idem:{account_id}:{key_digest}"

    # -- synchronous resources --------------------------------------------------------------------
    def account(self, account_id: str) -> str:
        return f"{self.tag(self.partition(account_id))}:acct:{account_id}"

    def resource(self, owner_id: str, kind: str, resource_id: str) -> str:
        return f"{self.tag(self.partition(owner_id))}:{kind}:{resource_id}"

    def item_source(self, owner_id: str, item_type: str, external_id: str) -> str:
        """The owner's items of the source ``item_type``/``external_id`` (hashed: an external
        id may be a 2 KiB URL)."""
        digest = hashlib.sha256(f"{item_type}\n{external_id}".encode()).hexdigest()
        return f"{self.tag(self.partition(owner_id))}:src:{owner_id}:{digest}"

    def resource_index(self, owner_id: str, kind: str) -> str:
        return f"{self.tag(self.partition(owner_id))}:{kind}s:{owner_id}"

    def blob(self, partition: int, sha256: str) -> str:
        return f"{self.blob_prefix(partition)}{sha256}"

    def blob_prefix(self, partition: int) -> str:
        """What a sha256 is appended to for its blob's name, in ``partition``."""
        return f"{self.tag(partition)}:blob:"

    # -- schedules --------------------------------------------------------------------------------
    def schedule_due(self, partition: int) -> str:
        return f"{self.tag(partition)}:schdue"

    def schedule_run(self, owner_id: str, schedule_id: str) -> str:
        return f"{self.tag(self.partition(owner_id))}:schrun:{schedule_id}"

    def schedule_seen(self, owner_id: str, schedule_id: str) -> str:
        return f"{self.tag(self.partition(owner_id))}:schseen:{schedule_id}"

    def feed(self, partition: int, owner_id: str) -> str:
        """The realtime feed of ``owner_id``, whose partition is ``partition``."""
        return f"{self.tag(partition)}:feed:{owner_id}"

    def feed_live(self, partition: int) -> str:
        """The partition's feed notifications: which feeds a projector commit appended to."""
        return f"{self.tag(partition)}:feedlive"

    # -- retention and the archive (engine.archive) ----------------------------------------------
    def accounts(self, partition: int) -> str:
        return f"{self.tag(partition)}:accounts"

    def archive(self, partition: int) -> str:
        return f"{self.tag(partition)}:archive"

    def archive_lease(self, partition: int) -> str:
        return f"{self.tag(partition)}:archive:lease"

    def open_charges(self, partition: int) -> str:
        return f"{self.tag(partition)}:charges:open"

    # -- projections ------------------------------------------------------------------------------
    def view_ns(self, partition: int, version: int) -> str:
        """The prefix of projection namespace ``version`` in ``partition``."""
        return f"{self.tag(partition)}:v{version}"
