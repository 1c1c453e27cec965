"""Findings ("incidents"): validation of what editors send (model.py) and the `incidents`
table's queries (store.py); the HTTP routes are in oonibackend/routes/incidents.py."""
