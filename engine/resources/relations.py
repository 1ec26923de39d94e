"""Relation zsets: ids listed under a parent, ``Store.children(owner, relation, parent_id)``.

Each pair that must stay consistent (a collection's items and an item's collections) is written
in the same script.
"""

COLLECTION_ITEMS = "colitems"  # collection -> its items
ITEM_COLLECTIONS = "itemcols"  # item -> the collections holding it (so deleting it detaches)
COLLECTION_SCHEDULES = "colschs"  # collection -> the schedules it is attached to
REPORTER_WORKFLOWS = "repwfs"  # reporter -> its workflows
REPORTER_SCHEDULES = "repschs"  # reporter -> its schedules
ITEM_DOCUMENTS = "itemdocs"  # item -> its stored documents
REPORTER_DOCUMENTS = "repdocs"  # reporter -> its stored documents
