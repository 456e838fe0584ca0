"""Projections of a job's log where users look: the seed's `UPDATES/` files, in a Hub repo
(`hub.HubMirror`) or a folder (`local.LocalMirror`), both from the pure `updates.project`."""
