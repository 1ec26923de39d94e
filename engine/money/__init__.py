"""Money: coins as integer micro-coins, never a float, and a balance that never goes negative.

    billing.py    pure: charge ids, the money events of an attempt (reserve, settle, release)
                  and the balance moves the event store applies with them
    accounts.py   accounts, balances, credits, the ledger listing, API-key hashes
    read_fees.py  the fee of a read: admitted before, settled once after the answer
    audit.py      an account recomputed from its ledger (``clipstream accounts audit``)

The flat fee of a request is charged by the event store's admission script, and a step's cost by
its append (engine.log): this room computes the moves, the log applies them atomically with the
events. May import engine.runtime, engine.log and the shared vocabulary (settings, clock,
connection, errors); not resources, tools, run, schedules or commands.
"""
