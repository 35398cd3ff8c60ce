"""``tokenflow console``: a local web console over the operator API (see server.py)."""
