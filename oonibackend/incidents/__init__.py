"""Findings ("incidents"): validation of what editors send (model.py); routes in
oonibackend/routes/incidents.py."""
