"""One module per tab; each has ``build(service, ...)`` that lays out its components inside the current tab and
module-level functions that do the work (called by the handlers, tested without a browser)."""
