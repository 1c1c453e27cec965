"""OONI's AS-to-organisation history, imported into the asnmeta table (`update-asnmeta`)."""
