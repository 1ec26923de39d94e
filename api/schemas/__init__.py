"""The API's bodies as msgspec Structs, one source for validation, encoding and the OpenAPI
document:

    requests.py     what clients send: request bodies (unknown fields refused) and query strings
    resources.py    what they get back about accounts, items and the synchronous resources
    operators.py    what operators get back under /admin about the whole system (the console)
    executions.py   what they get back about executions, schedule runs, transcripts and the feed

Only ``api.render`` builds response Structs; ``api.parse`` decodes requests into theirs.
"""
