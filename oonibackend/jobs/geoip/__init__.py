"""The monthly GeoIP databases (db-ip lite by default), downloaded, verified and installed as
`geoip.cc_db` / `geoip.asn_db` (`download-geoip`); the API reads them (oonibackend/geoip.py)."""
