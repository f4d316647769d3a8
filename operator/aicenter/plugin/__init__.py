"""``kubectl aicenter``: what the operators of a GPU centre look at.

A kubectl plugin (console script ``kubectl-aicenter``) shipped in the operator's wheel. It reads the
operator's read-only visibility API (``/visibility/v1/...``) through the API server's service proxy
(RBAC: ``get`` on ``services/proxy`` of the operator's metrics Service) or, with ``--endpoint``,
straight from a URL, and shows it as plain text tables (``-o json`` for the documents themselves)
or as a live web page (``kubectl aicenter dashboard``).

* :mod:`.source`: where the documents come from (service proxy or endpoint), service discovery.
* :mod:`.views`: the documents as tables and explanations (pure functions).
* :mod:`.dashboard`: the local web server of the live picture; its page lives in ``web/``.
* :mod:`.cli`: the command line.

The plugin never imports the operator's loop or its scheduling core: it shows what the operator
says, it does not recompute it (import-linter contracts in ``pyproject.toml``).
"""
