"""The API edge: typed request objects, validated before any handler or engine sees them.

One module per object family (containers, networks, exec, images, system), Docker's swagger
types (Engine API 1.41-1.47) as the reference; `decode` turns a body into an object or into
the 400 dockerd would give, `query` does the same for query parameters.
"""
