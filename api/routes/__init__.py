"""The HTTP routes, one module per resource family. Each handler is thin: decode the request,
call one engine or projections function, encode the answer."""
