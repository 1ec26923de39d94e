"""clipstream's doors: the Starlette app (routes, auth, schemas, errors) and the CLI."""
