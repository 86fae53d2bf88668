"""Shared support: the commands' options and error path (cli), atomic file writes (io), UserError
(errors), provenance, plotting. Imports nothing else of fastnn."""
